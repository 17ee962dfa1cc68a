"""The embedding engine: a transformers encoder with sentence-transformers pooling, batched across calls.

It reads the sentence-transformers files shipped with the model (modules.json, 1_Pooling/config.json,
sentence_bert_config.json) to pool and normalise exactly as the model was trained, without needing
the sentence-transformers package. Inputs over the context length are refused, never truncated
silently, before they are queued. Concurrent calls share forward passes through
`engine.embedding_batcher.DynamicBatcher` (its thread is the only one that runs the model), and an LRU
cache keyed by token ids answers repeated inputs without the model. BERT encoders run in
`engine.modeling.encoder` (packed rows, bfloat16 matrix multiplies on CPUs that do them natively),
other encoders through transformers. See docs/engine.md, "Embedding engine".
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import torch

from tokenyard.engine.base import EngineStats
from tokenyard.engine.context_window import check_context_length
from tokenyard.engine.embedding_batcher import DynamicBatcher
from tokenyard.engine.modeling.encoder import Packed, PackedEncoder
from tokenyard.engine.modeling.encoder import supports as packed_supports
from tokenyard.errors import InvalidRequestError, ModelLoadError, NoHealthyWorkerError
from tokenyard.models import check_context_setting, model_context_length

Pooling = Literal["mean", "cls", "max"]
Embedded = tuple[list[list[float]], int]  # the vectors, in input order, and the tokens they used
_INLINE_TOKENIZE_CHARS = 2_000  # requests up to this many characters are tokenised on the event loop
_PADDING_WASTE = 2.0  # a forward may pad its rows to at most this many times their real tokens
# The batcher thread runs the model on one core: the HTTP work around each call wants the other, and
# with sleeping OpenMP threads (engine/__init__.py) a second thread costs a wake-up per op (docs/engine.md).
_FORWARD_THREADS = 1


class SimpleEmbeddingEngine:
    """`engine.base.EmbeddingEngine` over a Hugging Face `AutoModel` encoder."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        pooling: Pooling,
        normalize: bool,
        context_length: int,
        max_batch_size: int = 16,
        batch_wait_timeout: float = 0.1,
        cache_size: int = 10_000,
        matmul_dtype: torch.dtype | None = None,
    ) -> None:
        self.context_length = context_length
        self.dimensions = int(model.config.hidden_size)
        self._model = model
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._normalize = normalize
        self._device = next(model.parameters()).device
        # BERT encoders run packed (engine/modeling/encoder.py); other architectures through transformers.
        self._packed: PackedEncoder | None = None
        if packed_supports(model):
            self._packed = PackedEncoder(model, matmul_dtype or next(model.parameters()).dtype)
            self._model = None  # the packed encoder holds its own copy of the weights
        self._pad_id = int(tokenizer.pad_token_id or 0)
        self._vocab_size = int(model.get_input_embeddings().num_embeddings)
        self._prefix, self._suffix = _special_tokens_around(tokenizer)
        # Large requests are tokenised off the event loop; the lock keeps a fast tokenizer to one thread
        # at a time (it may reconfigure itself per call, which fails while another thread uses it).
        self._tokenize = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenyard-embed-tokenize")
        self._tokenizer_lock = threading.Lock()
        self._batcher = DynamicBatcher(
            self._forward_rows,
            max_batch_size=max_batch_size,
            batch_wait_timeout=batch_wait_timeout,
            cache_size=cache_size,
        )

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        context_length: int | None = None,
        max_batch_size: int = 16,
        batch_wait_timeout: float = 0.1,
        cache_size: int = 10_000,
        matmul_dtype: torch.dtype | None = None,
    ) -> SimpleEmbeddingEngine:
        """Load an encoder folder; pooling and normalisation follow its sentence-transformers files."""
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
        pooling, normalize = read_pooling(folder)
        limit = model_context_length(model.config)
        check_context_setting(context_length, limit)
        trained = _trained_length(folder)  # shorter than the position table for most embedding models
        default = min(trained, limit) if trained else limit
        return cls(
            model,
            tokenizer,
            pooling=pooling,
            normalize=normalize,
            context_length=context_length or default,
            max_batch_size=max_batch_size,
            batch_wait_timeout=batch_wait_timeout,
            cache_size=cache_size,
            matmul_dtype=matmul_dtype or default_matmul_dtype(dtype, device),
        )

    async def start(self) -> None:
        return None  # the model is loaded; the batcher thread starts with the first call

    async def shutdown(self) -> None:
        await self._batcher.shutdown()
        # Texts being tokenised finish and are then refused by the closed batcher, with a 503.
        self._tokenize.shutdown(wait=False)

    async def embed_texts(self, texts: Sequence[str]) -> Embedded:
        if not texts:
            return [], 0
        return await self._embed_rows(await self._encode_texts(list(texts)))

    async def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> Embedded:
        """Embed pre-tokenised inputs: the content ids; the model's [CLS]/[SEP]-style tokens are added."""
        rows = [list(ids) for ids in token_ids]
        for row in rows:
            bad = next((t for t in row if not 0 <= t < self._vocab_size), None)
            if bad is not None:
                raise InvalidRequestError(
                    f"token id {bad} is outside the vocabulary (0..{self._vocab_size - 1})", param="input"
                )
        return await self._embed_rows([self._prefix + row + self._suffix for row in rows])

    def stats(self) -> EngineStats:
        running, waiting = self._batcher.num_running_and_waiting()
        return EngineStats(
            num_running=running,
            num_waiting=waiting,
            tokens_per_second=self._batcher.tokens_per_second,
            extra={**self._batcher.counters(), **self._batcher.cache.counters()},
        )

    async def _embed_rows(self, rows: list[list[int]]) -> Embedded:
        """Vectors for full model inputs, in input order, and the number of tokens they used."""
        if not rows:
            return [], 0
        for index, row in enumerate(rows):
            check_context_length(len(row), 0, self.context_length, prompt_param="input", where=f"input {index}")
        vectors = await self._batcher.embed(rows)
        return vectors, sum(len(row) for row in rows)

    async def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids with the model's special tokens: on the event loop when short, else in a thread.

        A few sentences tokenise faster than the two thread switches that running them elsewhere costs
        (far more on a busy CPU); a large batch of long texts takes long enough that the loop must not wait
        for it (docs/engine.md, "Measurements behind the code").
        """
        if sum(len(text) for text in texts) <= _INLINE_TOKENIZE_CHARS and self._tokenizer_lock.acquire(blocking=False):
            try:
                return self._encode_now(texts)
            finally:
                self._tokenizer_lock.release()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._tokenize, self._encode_locked, texts)
        except RuntimeError:  # the executor is shut down
            raise NoHealthyWorkerError("The embedding engine is shutting down; retry on another worker.") from None

    def _encode_locked(self, texts: list[str]) -> list[list[int]]:
        with self._tokenizer_lock:
            return self._encode_now(texts)

    def _encode_now(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self._tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]]

    # --- the batcher thread -------------------------------------------------------------------

    def _forward_rows(self, rows: list[list[int]]) -> list[list[float]]:
        """One vector per row, in order; rows of very different lengths run in separate forwards."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        vectors: list[list[float]] = [[] for _ in rows]
        with torch.inference_mode():
            for group in padding_groups([len(rows[i]) for i in order]):
                chunk = order[group]
                for i, vector in zip(chunk, self._forward([rows[i] for i in chunk]), strict=True):
                    vectors[i] = vector
        return vectors

    def _forward(self, rows: list[list[int]]) -> list[list[float]]:
        if torch.get_num_threads() != _FORWARD_THREADS:
            torch.set_num_threads(_FORWARD_THREADS)
        if self._packed is not None:
            vectors = self._packed(Packed.of(rows, self._device), self._pooling, self._normalize)  # [B, H]
        else:
            vectors = self._padded_forward(rows)
        rows_out: list[list[float]] = vectors.cpu().tolist()
        return rows_out

    def _padded_forward(self, rows: list[list[int]]) -> torch.Tensor:
        """Through the transformers model, for encoders the packed one does not cover."""
        width = max(len(row) for row in rows)
        # Right padding, as BERT-style encoders expect: position 0 stays [CLS] for cls pooling.
        input_ids = torch.tensor([row + [self._pad_id] * (width - len(row)) for row in rows], device=self._device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], device=self._device)
        # input_ids, mask: [B, S]
        hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [B, S, H]
        pooled = pool(hidden.float(), mask, self._pooling)  # [B, H]
        if self._normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


def default_matmul_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """What a BERT encoder's matrix multiplies run in: bfloat16 for a float32 model on a CPU that
    multiplies bfloat16 natively (AMX or AVX512-BF16), where they are several times faster and the
    vectors stay within the cosine to float32's that tests/engine/test_encoder.py holds (≥ 0.999);
    otherwise the model's dtype. The figures are in docs/engine.md, "Embedding engine"."""
    from tokenyard.engine.loader import cpu_has_native_bfloat16  # the loader imports this module

    if dtype == torch.float32 and device.type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return dtype


def padding_groups(lengths: list[int], waste: float = _PADDING_WASTE) -> list[slice]:
    """Cut ascending `lengths` into runs whose padded size stays within `waste` times their real tokens.

    One forward per run: fifteen 10-token inputs and one of 256 cost 150 + 256 tokens in two forwards
    rather than 16 x 256 in one, while inputs of similar length still share a forward.
    """
    groups: list[slice] = []
    start, real = 0, 0
    for i, length in enumerate(lengths):
        if i > start and length * (i - start + 1) > waste * (real + length):
            groups.append(slice(start, i))
            start, real = i, 0
        real += length
    groups.append(slice(start, len(lengths)))
    return groups


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """Sentence vectors from token states, ignoring padding."""
    # hidden: [B, S, H], mask: [B, S] -> [B, H]
    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, S, 1]
    if mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def read_pooling(folder: Path) -> tuple[Pooling, bool]:
    """Pooling mode and whether to L2-normalise, from the sentence-transformers files.

    A plain encoder folder without them gets mean pooling and normalisation, the usual choice and
    what the OpenAI embeddings API promises (unit vectors).
    """
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean", True
    modules = _load_json(modules_file)
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    normalize = any(t.endswith(".Normalize") for t in types)
    pooling_dir = next((str(m.get("path")) for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling_dir is None:
        return "mean", normalize
    config = _load_json(folder / pooling_dir / "config.json")
    modes: dict[str, Pooling] = {
        "pooling_mode_mean_tokens": "mean",
        "pooling_mode_cls_token": "cls",
        "pooling_mode_max_tokens": "max",
    }
    for key, mode in modes.items():
        if config.get(key):
            return mode, normalize
    raise ModelLoadError(f"{folder / pooling_dir / 'config.json'}: unsupported pooling mode; use mean, cls or max")


def _trained_length(folder: Path) -> int | None:
    """sentence-transformers' max_seq_length: the length the embedding model was trained for."""
    path = folder / "sentence_bert_config.json"
    value = _load_json(path).get("max_seq_length") if path.is_file() else None
    return value if isinstance(value, int) and value > 0 else None


def _special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (e.g. [CLS] ... [SEP]), found by probing."""
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    bare = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}; re-download the model".splitlines()[0]) from None
