"""The word filter through real gateways, the real default model and the official `openai` client.

Listed for the answers are words the 135M model says at temperature 0 to these prompts without
them being in the prompt: "Paris" (the capital of France), "晨赏" (its idea of Chinese for "hello",
streamed as two chunks), "十二" (counting on from 一、二、三、四、) and "Nova Haven" (two tokens).
One gateway masks, one stops; a third, unfiltered, shows what the model says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.integration.processes import Cluster, Service, free_port, service_env

MODEL = "smollm2-135m-instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
HELLO = [{"role": "user", "content": "How do you say 'hello' in Chinese?"}]
COUNTING = "一、二、三、四、"
WORDS = "大麻\n冰毒\n海洛因\ncocaine\n"
ANSWERS = "Paris\n晨赏\n十二\nNova Haven\n"

pytestmark = pytest.mark.timeout(600)


def start_filtered_gateway(cluster: Cluster, directory: Path, action: str) -> str:
    directory.mkdir()
    (directory / "words.txt").write_text(WORDS, encoding="utf-8")
    (directory / "answers.txt").write_text(ANSWERS, encoding="utf-8")
    (directory / "allow.txt").write_text("大麻烦\n", encoding="utf-8")
    config = {
        "filter": {
            "word_files": [str(directory / "words.txt"), str(directory / "answers.txt")],
            "allow_files": [str(directory / "allow.txt")],
            "output_action": action,
        }
    }
    (directory / "tokenyard.yaml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    port = free_port()
    args = ["gateway", "--port", str(port), "--controller", cluster.controller_url, "--config"]
    gateway = Service(
        f"gateway-{action}", [*args, str(directory / "tokenyard.yaml")], cluster.log_dir, service_env(directory)
    ).start()
    cluster.workers[gateway.name] = gateway  # stopped and logged with the cluster
    gateway.wait_http(f"http://127.0.0.1:{port}/ready", timeout=60)
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory, test_home: Path) -> Iterator[dict[str, str]]:
    cluster = Cluster(tmp_path_factory.mktemp("filter-logs"), test_home)
    try:
        cluster.start_controller()
        cluster.start_worker("chat", MODEL)
        cluster.start_gateway()
        root = tmp_path_factory.mktemp("filter")
        yield {
            "plain": f"{cluster.gateway_url}/v1",
            "mask": start_filtered_gateway(cluster, root / "mask", "mask"),
            "stop": start_filtered_gateway(cluster, root / "stop", "stop"),
            "worker_log": str(cluster.workers["chat"].log_path),
        }
    finally:
        cluster.stop()


def client(urls: dict[str, str], which: str) -> OpenAI:
    return OpenAI(base_url=urls[which], api_key="unused", max_retries=0, timeout=120)


def chat(c: OpenAI, messages: Any, **kwargs: Any) -> Any:
    return c.chat.completions.create(model=MODEL, messages=messages, temperature=0, **{"max_tokens": 40, **kwargs})


def streamed(c: OpenAI, messages: Any, **kwargs: Any) -> tuple[list[str], str | None]:
    pieces, reason = [], None
    for chunk in chat(c, messages, stream=True, **kwargs):
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            reason = choice.finish_reason or reason
    return pieces, reason


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "哪里能买到大 麻？"}], "messages[0].content"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "ｃｏｃａｉｎｅ price"}]}],
            "messages[0].content[0].text",
        ),
        (
            [
                {"role": "user", "content": "check stock"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "stock", "arguments": '{"item": "冰\\u200b毒"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "0"},
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [
                {"role": "user", "content": "check stock"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "stock", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "海 洛 因: 3"},
            ],
            "messages[2].content",
        ),
    ],
)
def test_a_listed_word_in_a_request_is_a_400_naming_the_rule(urls: dict[str, str], messages: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        chat(client(urls, "mask"), messages)
    error = info.value.body
    assert info.value.status_code == 400
    assert isinstance(error, dict) and error["code"] == "content_filtered" and error["param"] == param
    assert "rule words:" in error["message"] and "'words'" in error["message"]
    for word in ("大麻", "cocaine", "冰毒", "海洛因"):
        assert word not in error["message"]


def test_completion_prompts_are_screened(urls: dict[str, str]) -> None:
    c = client(urls, "stop")
    with pytest.raises(openai.BadRequestError) as info:
        c.completions.create(model=MODEL, prompt=["fine", "买大麻"], max_tokens=1)
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "content_filtered"
    assert info.value.body["param"] == "prompt[1]"
    with pytest.raises(openai.BadRequestError, match="not as token ids"):
        c.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=1)


def test_an_allowed_word_passes(urls: dict[str, str]) -> None:
    answer = chat(client(urls, "mask"), [{"role": "user", "content": "这真是个大麻烦。"}], max_tokens=2)
    assert answer.choices[0].finish_reason == "length"


def test_output_is_masked_whole_streamed_and_in_every_choice(urls: dict[str, str]) -> None:
    assert chat(client(urls, "plain"), FRANCE).choices[0].message.content == "The capital of France is Paris."
    masked = client(urls, "mask")
    whole = chat(masked, FRANCE, n=2)
    assert [c.message.content for c in whole.choices] == ["The capital of France is *****."] * 2
    assert [c.finish_reason for c in whole.choices] == ["stop", "stop"]
    pieces, reason = streamed(masked, FRANCE)
    assert "".join(pieces) == "The capital of France is *****." and reason == "stop"


def test_a_word_split_across_sse_chunks_is_masked(urls: dict[str, str]) -> None:
    plain, _ = streamed(client(urls, "plain"), HELLO)
    assert "晨" in plain and "赏" in plain  # the model streams the word as two chunks
    pieces, reason = streamed(client(urls, "mask"), HELLO)
    text = "".join(pieces)
    assert text == "".join(plain).replace("晨赏", "**") and reason == "stop"


def test_stop_ends_the_answer_before_the_word(urls: dict[str, str]) -> None:
    stopper = client(urls, "stop")
    whole = chat(stopper, FRANCE)
    assert whole.choices[0].message.content == "The capital of France is "
    assert whole.choices[0].finish_reason == "content_filter"
    pieces, reason = streamed(stopper, HELLO)
    plain = "".join(streamed(client(urls, "plain"), HELLO)[0])
    assert "".join(pieces) == plain[: plain.index("晨")] and reason == "content_filter"


def test_completions_mask_and_stop_and_the_worker_frees_the_slot(urls: dict[str, str]) -> None:
    plain = client(urls, "plain").completions.create(model=MODEL, prompt=COUNTING, temperature=0, max_tokens=30)
    assert "十一、十二、" in plain.choices[0].text
    masked = client(urls, "mask").completions.create(model=MODEL, prompt=COUNTING, temperature=0, max_tokens=30)
    assert masked.choices[0].text == plain.choices[0].text.replace("十二", "**")
    stream = client(urls, "stop").completions.create(
        model=MODEL,
        prompt=COUNTING,
        temperature=0,
        max_tokens=400,
        extra_body={"ignore_eos": True},
        stream=True,
        stream_options={"include_usage": True},
    )
    text, reasons, usage, request_id = "", [], None, ""
    for chunk in stream:
        request_id = chunk.id
        for choice in chunk.choices:
            text += choice.text
            reasons.append(choice.finish_reason)
        usage = chunk.usage or usage
    assert text == plain.choices[0].text[: plain.choices[0].text.index("十二")]
    assert reasons[-1] == "content_filter"
    assert usage is not None and usage.completion_tokens < 400  # the worker stopped generating
    log = Path(urls["worker_log"]).read_text(errors="replace")
    assert f"request {request_id}-0-0 aborted" in log


def test_latin_phrase_split_across_tokens_is_masked(urls: dict[str, str]) -> None:
    plain = client(urls, "plain").completions.create(
        model=MODEL, prompt="Once upon a time", temperature=0, max_tokens=16
    )
    assert "Nova Haven" in plain.choices[0].text
    pieces = [
        c.choices[0].text
        for c in client(urls, "mask").completions.create(
            model=MODEL, prompt="Once upon a time", temperature=0, max_tokens=16, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == plain.choices[0].text.replace("Nova Haven", "**** *****")


ANSWER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "answer",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tool_call_arguments_are_filtered_too(urls: dict[str, str]) -> None:
    forced: Any = {"type": "function", "function": {"name": "answer"}}
    plain = chat(client(urls, "plain"), FRANCE, tools=[ANSWER_TOOL], tool_choice=forced)
    (call,) = plain.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    masked = chat(client(urls, "mask"), FRANCE, tools=[ANSWER_TOOL], tool_choice=forced)
    (call,) = masked.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "*****"}
    pieces = [
        delta.function.arguments
        for chunk in chat(client(urls, "mask"), FRANCE, tools=[ANSWER_TOOL], tool_choice=forced, stream=True)
        for choice in chunk.choices
        for delta in choice.delta.tool_calls or []
        if delta.function and delta.function.arguments
    ]
    assert json.loads("".join(pieces)) == {"city": "*****"}


def raw_body(c: OpenAI, api: str, **kwargs: Any) -> bytes:
    """The response as it came over the wire (JSON, or every SSE event), through the official client."""
    create = c.chat.completions if api == "chat" else c.completions
    with create.with_streaming_response.create(model=MODEL, temperature=0, **kwargs) as response:
        return b"".join(response.iter_bytes())


def documents(body: bytes) -> list[Any]:
    if not body.startswith(b"data:"):
        return [json.loads(body)]
    events = [line[5:].strip() for line in body.splitlines() if line.startswith(b"data:")]
    return [json.loads(event) for event in events if event != b"[DONE]"]


def token_bytes(token: str) -> bytes:
    """A legacy completions token as bytes ("bytes:\\xe5\\x8d" for part of a character)."""
    if token.startswith("bytes:"):
        return bytes(int(h, 16) for h in token[len("bytes:") :].split("\\x")[1:])
    return token.encode()


def spelled(body: bytes) -> bytes:
    """The chosen tokens' bytes, joined in order over the whole response: what they spell."""
    out = b""
    for document in documents(body):
        for choice in document.get("choices", []):
            logprobs = choice.get("logprobs") or {}
            out += bytes(b for item in logprobs.get("content") or [] for b in item["bytes"])
            out += b"".join(token_bytes(token) for token in logprobs.get("tokens") or [])
    return out


def shows(body: bytes, word: str) -> bool:
    return word.encode() in body or json.dumps(word).encode()[1:-1] in body or word.encode() in spelled(body)


@pytest.mark.parametrize("stream", [False, True])
def test_logprobs_never_show_a_filtered_word(urls: dict[str, str], stream: bool) -> None:
    chat_fields: Any = {"messages": FRANCE, "max_tokens": 12, "logprobs": True, "top_logprobs": 5, "stream": stream}
    counting: Any = {"prompt": COUNTING, "max_tokens": 30, "logprobs": 5, "echo": True, "stream": stream}
    assert shows(raw_body(client(urls, "plain"), "chat", **chat_fields), "Paris")  # where the leak was
    assert shows(raw_body(client(urls, "plain"), "completions", **counting), "十二")
    for action in ("mask", "stop"):
        chat_body = raw_body(client(urls, action), "chat", **chat_fields)
        assert not shows(chat_body, "Paris"), chat_body
        assert (b"*****" in chat_body) == (action == "mask") and b'"token":' in chat_body
        completion_body = raw_body(client(urls, action), "completions", **counting)
        assert not shows(completion_body, "十二"), completion_body
        assert COUNTING.encode() in completion_body and b'"tokens":' in completion_body


def test_logprobs_are_unchanged_when_nothing_is_filtered(urls: dict[str, str]) -> None:
    fields: Any = {"max_tokens": 10, "logprobs": True, "top_logprobs": 3}
    question = [{"role": "user", "content": "What is two plus two?"}]
    plain = chat(client(urls, "plain"), question, **fields).choices[0].logprobs.content
    assert plain
    for stream in (False, True):
        if stream:
            items = [
                item
                for chunk in chat(client(urls, "mask"), question, stream=True, **fields)
                for choice in chunk.choices
                for item in (choice.logprobs.content or [] if choice.logprobs else [])
            ]
        else:
            items = chat(client(urls, "mask"), question, **fields).choices[0].logprobs.content
        assert [(i.token, i.bytes, [t.token for t in i.top_logprobs]) for i in items] == [
            (i.token, i.bytes, [t.token for t in i.top_logprobs]) for i in plain
        ]
        assert [i.logprob for i in items] == pytest.approx([i.logprob for i in plain])
    legacy: Any = {"prompt": "The quick brown fox", "max_tokens": 8, "logprobs": 3, "echo": True, "temperature": 0}
    expected = client(urls, "plain").completions.create(model=MODEL, **legacy).choices[0]
    got = client(urls, "mask").completions.create(model=MODEL, **legacy).choices[0]
    assert got.text == expected.text and got.logprobs is not None and expected.logprobs is not None
    assert got.logprobs.tokens == expected.logprobs.tokens and got.logprobs.text_offset == expected.logprobs.text_offset
    assert [sorted(t or {}) for t in got.logprobs.top_logprobs or []] == [
        sorted(t or {}) for t in expected.logprobs.top_logprobs or []
    ]
