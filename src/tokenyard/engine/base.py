"""The narrow interfaces the worker uses to drive an engine.

`GenerationEngine` takes token ids and `SamplingParams` (the one shape the gateway builds and the
worker settles, `protocol.sampling`) and streams `GenerationOutput`s;
`EmbeddingEngine` turns texts into vectors. Both report `EngineStats` for heartbeats and health.
Prompt rendering (chat templates) and tokenisation live on the engine's `tokenizer`, because the
engine owns the model's files.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from tokenyard.protocol.finish import EngineFinishReason
from tokenyard.protocol.internal import ChatMessage, FunctionTool
from tokenyard.protocol.sampling import SamplingParams  # defined where the gateway can build it


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, with the most likely alternatives at that position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass
class GenerationOutput:
    """What one engine step produced for one request: new text (never a broken UTF-8 character)."""

    text: str
    num_new_tokens: int
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: EngineFinishReason | None = None
    token_ids: list[int] = field(default_factory=list)
    # Logprobs of the tokens whose text is in `text` (a token's logprob waits while its text is held back).
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None  # on the first output; None for the first token
    num_cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache


@dataclass
class EngineStats:
    """A snapshot for heartbeats, `/status` and readiness."""

    num_running: int = 0
    num_waiting: int = 0
    tokens_per_second: float = 0.0
    seconds_since_progress: float = 0.0
    kernel_path: str = ""  # how decode steps run: native, torch, cuda-graphs, transformers (for metrics)
    extra: dict[str, float] = field(default_factory=dict)


# Called by the engine thread after each step: (seconds the step took, sequences in it, tokens produced).
StepListener = Callable[[float, int, int], None]


@runtime_checkable
class StepObservable(Protocol):
    """An engine that reports each step (the worker's step-time histogram listens)."""

    def add_step_listener(self, listener: StepListener) -> None: ...


class PromptTokenizer(Protocol):
    """Turns chat messages or text into token ids, with the model's own chat template."""

    def encode_chat(self, messages: Sequence[ChatMessage], tools: Sequence[FunctionTool] | None = None) -> list[int]:
        """`tools`: functions to describe in the prompt (the template's way if it has one)."""
        ...

    def encode_text(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (part of a character for a byte-fallback piece)."""
        ...


class GenerationEngine(Protocol):
    """A text-generation engine: add a request, stream its outputs, abort it, report health."""

    tokenizer: PromptTokenizer
    context_length: int

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[GenerationOutput, None]:
        """Stream outputs until one has a finish_reason; closing the generator aborts the request."""
        ...

    async def abort(self, request_id: str) -> None: ...

    def stats(self) -> EngineStats: ...


class EmbeddingEngine(Protocol):
    """An encoder engine: texts (or token ids) in, one normalised vector each out."""

    context_length: int
    dimensions: int

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def embed_texts(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Return the vectors and the number of tokens the inputs used."""
        ...

    async def embed_token_ids(self, token_ids: Sequence[Sequence[int]]) -> tuple[list[list[float]], int]: ...

    def stats(self) -> EngineStats: ...
