"""The first embedding engine: a transformers encoder with sentence-transformers pooling.

It reads the sentence-transformers files shipped with the model (modules.json, 1_Pooling/config.json,
sentence_bert_config.json) to pool and normalise exactly as the model was trained, without needing
the sentence-transformers package. Inputs over the context length are refused, never truncated
silently. Each call runs in one dedicated worker thread (calls queue one behind the other), with its
inputs batched by similar length.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import torch

from tokenyard.engine.base import EngineStats
from tokenyard.engine.models import model_context_length
from tokenyard.errors import ErrorCode, InvalidRequestError, ModelLoadError

Pooling = Literal["mean", "cls", "max"]
Embedded = tuple[list[list[float]], int]  # the vectors, in input order, and the tokens they used
_BATCH_SIZE = 32  # inputs per forward pass; bounds activation memory for long lists
_EMA_WEIGHT = 0.2


class SimpleEmbeddingEngine:
    """`engine.base.EmbeddingEngine` over a Hugging Face `AutoModel` encoder."""

    def __init__(self, model: Any, tokenizer: Any, *, pooling: Pooling, normalize: bool, context_length: int) -> None:
        self.context_length = context_length
        self.dimensions = int(model.config.hidden_size)
        self._model = model
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._normalize = normalize
        self._device = next(model.parameters()).device
        self._prefix, self._suffix = _special_tokens_around(tokenizer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenyard-embed")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._tokens_per_second = 0.0

    @classmethod
    def load(
        cls, folder: Path, *, device: torch.device, dtype: torch.dtype, context_length: int | None = None
    ) -> SimpleEmbeddingEngine:
        """Load an encoder folder; pooling and normalisation follow its sentence-transformers files."""
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
        pooling, normalize = read_pooling(folder)
        limit = model_context_length(model.config)
        if context_length is not None and context_length > limit:
            raise ModelLoadError(f"--context-length {context_length} exceeds the model's maximum of {limit} tokens")
        trained = _trained_length(folder)  # shorter than the position table for most embedding models
        default = min(trained, limit) if trained else limit
        return cls(model, tokenizer, pooling=pooling, normalize=normalize, context_length=context_length or default)

    async def start(self) -> None:
        return None  # the model is loaded; the worker thread starts with the first call

    async def shutdown(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def embed_texts(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        return await self._run(self._embed_texts_now, list(texts))

    async def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> tuple[list[list[float]], int]:
        """Embed pre-tokenised inputs: the content ids; the model's [CLS]/[SEP]-style tokens are added."""
        return await self._run(self._embed_ids_now, [list(ids) for ids in token_ids])

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(
                num_running=min(self._in_flight, 1),
                num_waiting=max(self._in_flight - 1, 0),
                tokens_per_second=self._tokens_per_second,
            )

    async def _run(self, job: Callable[[Any], Embedded], inputs: list[Any]) -> Embedded:
        if not inputs:
            return [], 0
        with self._lock:
            self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job, inputs)
        finally:
            with self._lock:
                self._in_flight -= 1

    # --- the worker thread --------------------------------------------------------------------

    def _embed_texts_now(self, texts: list[str]) -> Embedded:
        encoded = self._tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return self._embed_ids(list(encoded))

    def _embed_ids_now(self, token_ids: list[list[int]]) -> Embedded:
        vocab = int(self._model.get_input_embeddings().num_embeddings)
        for row in token_ids:
            bad = next((t for t in row if not 0 <= t < vocab), None)
            if bad is not None:
                raise InvalidRequestError(f"token id {bad} is outside the vocabulary (0..{vocab - 1})", param="input")
        return self._embed_ids([self._prefix + row + self._suffix for row in token_ids])

    def _embed_ids(self, rows: list[list[int]]) -> Embedded:
        """Vectors for full model inputs, in input order, and the number of tokens they used."""
        for index, row in enumerate(rows):
            if len(row) > self.context_length:
                raise InvalidRequestError(
                    f"input {index} has {len(row)} tokens, over this model's maximum context length of "
                    f"{self.context_length} tokens; shorten the input",
                    param="input",
                    code=ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                )
        started = time.monotonic()
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths pad less
        vectors: list[list[float]] = [[] for _ in rows]
        with torch.inference_mode():
            for start in range(0, len(order), _BATCH_SIZE):
                chunk = order[start : start + _BATCH_SIZE]
                for i, vector in zip(chunk, self._forward([rows[i] for i in chunk]), strict=True):
                    vectors[i] = vector
        num_tokens = sum(len(row) for row in rows)
        self._record(num_tokens, time.monotonic() - started)
        return vectors, num_tokens

    def _forward(self, rows: list[list[int]]) -> list[list[float]]:
        padded = self._tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        input_ids = padded["input_ids"].to(self._device)  # [B, S]
        mask = padded["attention_mask"].to(self._device)  # [B, S]
        hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # [B, S, H]
        pooled = pool(hidden.float(), mask, self._pooling)  # [B, H]
        if self._normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
        return [[float(x) for x in row] for row in pooled.cpu().tolist()]

    def _record(self, num_tokens: int, seconds: float) -> None:
        if seconds <= 0 or num_tokens == 0:
            return
        rate = num_tokens / seconds
        with self._lock:
            previous = self._tokens_per_second
            self._tokens_per_second = rate if previous == 0 else (1 - _EMA_WEIGHT) * previous + _EMA_WEIGHT * rate


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
