"""A model folder's tokenizer through the `tokenizers` library alone, its chat template through jinja2.

transformers' `AutoTokenizer` reads the same files (tokenizer.json, tokenizer_config.json,
chat_template.jinja), but its tokenizer classes and the Python copy of the vocabulary they build cost
a worker ~15 MiB more, ~46 MiB where nothing else imports transformers (docs/engine.md, "Sizing
memory"). Where the folder names the generic class (`TokenizersBackend`, `PreTrainedTokenizerFast`:
tokenizer.json taken as it is, as for every GGUF model tokenyard converts) and its config asks for
nothing that class would change (BOS/EOS added by the config, extra special tokens, added tokens
missing from tokenizer.json, clean-up of spaces), `FolderTokenizer.load` builds an object with the
part of transformers' tokenizer interface the engine uses, with the same results
(tests/engine/test_folder_tokenizer.py compares them). Otherwise it returns None and the caller
uses transformers.

Chat templates render as transformers renders them (`transformers.utils.chat_template_utils`): a
sandboxed jinja2 environment with trim_blocks and lstrip_blocks, loop controls, its `tojson`,
`raise_exception` and `strftime_now`, the `{% generation %}` tag, and the special tokens as variables;
message keys whose value is None are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

GENERIC_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_config.json keys that make transformers change the tokenizer.json pipeline or its special tokens
CHANGING_KEYS = ("add_bos_token", "add_eos_token", "extra_special_tokens", "additional_special_tokens")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class FolderTokenizer:
    """tokenizer.json plus the config's special tokens and the folder's chat template(s)."""

    def __init__(self, backend: Tokenizer, special_tokens: dict[str, str], chat_template: Any) -> None:
        backend.no_padding()  # transformers turns both off for a call that asks for neither
        backend.no_truncation()
        self.backend_tokenizer = backend
        self.special_tokens_map = special_tokens  # bos_token -> "<|im_start|>", ...: template variables
        self.chat_template: str | dict[str, str] | None = chat_template
        ids = (backend.token_to_id(token) for token in special_tokens.values())
        self.all_special_ids = sorted({token for token in ids if token is not None})
        eos = special_tokens.get("eos_token")
        self.eos_token_id = backend.token_to_id(eos) if eos is not None else None

    @classmethod
    def load(cls, folder: Path) -> FolderTokenizer | None:
        """The folder's tokenizer, or None where transformers' own class would build a different one."""
        config_file, tokenizer_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
        if not config_file.is_file() or not tokenizer_file.is_file():
            return None
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if config.get("tokenizer_class") not in GENERIC_CLASSES or any(config.get(key) for key in CHANGING_KEYS):
            return None
        backend = Tokenizer.from_file(str(tokenizer_file))
        if config.get("clean_up_tokenization_spaces") and type(backend.model).__name__ != "BPE":
            return None
        special = {name: _content(config[name]) for name in NAMED_SPECIAL_TOKENS if config.get(name) is not None}
        added = {(token_id, token.content) for token_id, token in backend.get_added_tokens_decoder().items()}
        marked = {content for _, content in added if _is_special(backend, content)}
        declared = {
            (int(token_id), _content(token)) for token_id, token in config.get("added_tokens_decoder", {}).items()
        }
        if not declared <= added or not set(special.values()) <= marked:
            return None  # transformers would add tokens to the vocabulary first
        return cls(backend, special, _chat_template(folder, config))

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self.backend_tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens))

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> Any:
        """A token's piece, or a list of pieces for a list of ids (as transformers' method)."""
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(token_id) for token_id in ids]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        if isinstance(tokens, str):
            return self.backend_tokenizer.token_to_id(tokens)
        return [self.backend_tokenizer.token_to_id(token) for token in tokens]

    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        return_dict: bool = True,
    ) -> Any:
        """transformers' method for what the engine asks of it: one conversation, rendered and encoded
        without added special tokens (the template writes them)."""
        chat = [{key: value for key, value in message.items() if value is not None} for message in conversation]
        rendered = _compiled(self._template(tools)).render(
            messages=[_alias_reasoning(message) for message in chat],
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )
        if not tokenize:
            return rendered
        ids = self.encode(rendered, add_special_tokens=False)
        return {"input_ids": ids} if return_dict else ids

    def _template(self, tools: list[dict[str, Any]] | None) -> str:
        templates = self.chat_template
        if not isinstance(templates, dict):
            if templates is None:
                raise ValueError("this tokenizer has no chat template")
            return templates
        if tools is not None and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ValueError(f"several chat templates and no default: {sorted(templates)}")


def _content(token: Any) -> str:
    return str(token["content"] if isinstance(token, dict) else token)


def _is_special(backend: Tokenizer, content: str) -> bool:
    return any(token.content == content and token.special for token in backend.get_added_tokens_decoder().values())


def _chat_template(folder: Path, config: dict[str, Any]) -> str | dict[str, str] | None:
    """chat_template.jinja and additional_chat_templates/*.jinja first, then tokenizer_config.json's."""
    templates: dict[str, str] = {}
    if (folder / "chat_template.jinja").is_file():
        templates["default"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for extra in sorted((folder / "additional_chat_templates").glob("*.jinja")):
        templates[extra.name.removesuffix(".jinja")] = extra.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    value = config.get("chat_template")
    if isinstance(value, list):
        return {template["name"]: template["template"] for template in value}
    return value if isinstance(value, str) else None


def _alias_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    """transformers fills `reasoning_content` and `thinking` from whichever reasoning field a message has."""
    reasoning = next((message[key] for key in REASONING_FIELDS if message.get(key) is not None), None)
    return message if reasoning is None else {"thinking": reasoning, **message, "reasoning_content": reasoning}


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """The template compiled in transformers' sandbox (see the module docstring)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}`: marks the assistant's text; renders its body."""

        tags = {"generation"}  # noqa: RUF012 (jinja2's own class attribute)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    class Namespace(jinja2.utils.Namespace):
        """jinja2's namespace without underscore-prefixed attributes, as transformers restricts it."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            for name in dict(*args, **kwargs):
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, dict(*args, **kwargs))

        def __setitem__(self, name: str, value: Any) -> None:
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot store {name!r} on a namespace")

    class TemplateDict:
        """`dict(...)` and `dict.fromkeys(...)` for templates, and nothing else of the type."""

        def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = Namespace
    return env.from_string(template)
