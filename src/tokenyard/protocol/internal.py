"""Typed messages between tokenyard's processes: worker <-> controller and gateway <-> worker.

Every internal HTTP body is one of these pydantic models, never an untyped dict. A worker's
heartbeat carries its whole status, so a restarted controller rebuilds its registry from the
next round of heartbeats (soft state) without any worker restarting.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from tokenyard.protocol.finish import ChunkFinishReason
from tokenyard.protocol.sampling import SamplingParams


class WorkerState(str, Enum):
    LOADING = "loading"  # registered, still converting or loading its model: requests get 503 model_loading
    HEALTHY = "healthy"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"
    EVICTED = "evicted"


class ModelKind(str, Enum):
    """What a worker's model does: text generation or embeddings."""

    GENERATE = "generate"
    EMBED = "embed"


class DispatchPolicy(str, Enum):
    SHORTEST_QUEUE = "shortest-queue"
    ROUND_ROBIN = "round-robin"
    LOTTERY = "lottery"


# --- worker <-> controller -------------------------------------------------------------------


class WorkerStatus(BaseModel):
    """What a worker reports when it registers and with every heartbeat."""

    worker_id: str
    address: str = Field(description="base URL the gateway uses, e.g. http://127.0.0.1:21002")
    models: list[str] = Field(min_length=1, description="the aliases this worker answers to")
    kind: ModelKind | None = Field(default=None, description="None only while loading, before the model is found")
    context_length: int = Field(default=0, ge=0, description="0 only while loading")
    state: WorkerState = WorkerState.HEALTHY
    reason: str = Field(default="", description="why the state is not healthy, for operators")
    queue_length: int = Field(default=0, ge=0, description="requests waiting plus running")
    num_running: int = Field(default=0, ge=0)
    num_waiting: int = Field(default=0, ge=0)
    speed: float = Field(default=1.0, gt=0, description="relative throughput; dispatch weighs queues by it")
    heartbeat_interval: float = Field(default=2.0, gt=0)
    engine: str = Field(default="", description="how the model runs, e.g. 'int4 on cpu, max batch 64'")
    tenants: list[str] = Field(default_factory=list, description="serve only these tenants; empty: shared by all")

    @model_validator(mode="after")
    def _known_once_loaded(self) -> WorkerStatus:
        if self.state is not WorkerState.LOADING and (self.kind is None or self.context_length < 1):
            raise ValueError(f"a {self.state.value} worker must report its model's kind and context length")
        return self


class HeartbeatResponse(BaseModel):
    accepted: bool = True


class UnregisterRequest(BaseModel):
    worker_id: str


class DispatchRequest(BaseModel):
    model: str
    exclude: list[str] = Field(default_factory=list, description="worker ids that already failed this request")
    tenant: str | None = Field(default=None, description="only shared workers and this tenant's own are eligible")


class FailureReport(BaseModel):
    """The gateway could not talk to a worker; the controller probes it and evicts it if it is gone."""

    worker_id: str
    error: str


class FailureReportResponse(BaseModel):
    evicted: bool


class DispatchResponse(BaseModel):
    worker_id: str
    address: str
    kind: ModelKind
    context_length: int
    tenants: list[str] = Field(default_factory=list, description="the worker's tenants; empty: shared")

    def serves(self, tenant: str | None) -> bool:
        """Whether a request of `tenant` may go to this worker (a shared one, or the tenant's own)."""
        return not self.tenants or tenant in self.tenants


class WorkerInfo(WorkerStatus):
    """The controller's view of one worker: its last report plus what the controller observed."""

    last_heartbeat_age: float = Field(description="seconds since the last report")


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


class ModelInfo(BaseModel):
    name: str
    kind: ModelKind
    context_length: int
    num_workers: int
    tenants: list[str] | None = Field(default=None, description="tenants whose workers serve it; None: shared")

    def reachable_by(self, tenant: str | None) -> bool:
        return self.tenants is None or tenant in self.tenants


class ModelList(BaseModel):
    models: list[ModelInfo]
    loading: list[str] = Field(default_factory=list, description="models whose workers are all still loading")


class Route(BaseModel):
    """One model's healthy workers, as the gateway caches them for when the controller is away."""

    model: str
    workers: list[DispatchResponse]


class RouteTable(BaseModel):
    routes: list[Route]
    complete: bool = Field(
        default=True, description="False while a freshly started controller is still hearing from its workers"
    )


# --- gateway <-> worker ----------------------------------------------------------------------


class ToolCall(BaseModel):
    """A function call an assistant turn made; `arguments` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


class ChatMessage(BaseModel):
    """A chat turn with its content already flattened to text by the gateway."""

    role: str
    content: str
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, description="an assistant turn's calls")
    tool_call_id: str | None = Field(default=None, description="a tool turn: the call it answers")


class FunctionTool(BaseModel):
    """A function offered to the model, rendered into the prompt (the chat template's, or ours)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="JSON schema of the arguments")


class ResumeState(BaseModel):
    """Where a stream broke: the tokens generated so far and the text the client already has.

    A worker that resumes appends the tokens to the prompt, sends first whatever text of them the
    client has not seen yet, then continues; at temperature 0 the result equals an unbroken stream.
    """

    token_ids: list[int] = Field(min_length=1)
    text_sent: str = ""


class GenerateRequest(BaseModel):
    """Exactly one of `messages` (rendered with the model's chat template), `prompt` or `prompt_token_ids`."""

    request_id: str
    model: str
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    sampling: SamplingParams = Field(
        default_factory=SamplingParams, description="built by the gateway, settled by the worker, read by the engine"
    )
    max_tokens_param: str = Field(
        default="max_tokens", description="the client's field name, quoted back in context errors"
    )
    resume: ResumeState | None = None
    tools: list[FunctionTool] | None = Field(default=None, description="functions to describe in the prompt")
    echo: bool = Field(default=False, description="the first chunk carries the prompt's text (`prompt_text`)")
    tenant: str | None = Field(default=None, description="who asks: the worker's tenant check and cache salt")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    status_code: int = 500


class LogprobEntry(BaseModel):
    """A token as OpenAI's logprobs show it: its text, its log-probability and its raw UTF-8 bytes."""

    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobs(BaseModel):
    """One token's entry with the most likely alternatives at its position."""

    token: str
    logprob: float | None = Field(description="None only for a prompt's first token, which nothing predicts")
    bytes: list[int]
    top_logprobs: list[LogprobEntry] = Field(default_factory=list)


class GenerateChunk(BaseModel):
    """One line of the worker's NDJSON stream: new text, and on the last line why it ended."""

    text: str = ""
    token_ids: list[int] = Field(default_factory=list, description="the tokens behind this chunk")
    num_new_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = Field(default=0, description="prompt tokens served from the prefix cache")
    logprobs: list[TokenLogprobs] | None = Field(default=None, description="for the tokens of `text`, if asked")
    prompt_logprobs: list[TokenLogprobs] | None = Field(default=None, description="first chunk, if asked")
    prompt_text: str | None = Field(default=None, description="first chunk, with `echo`: the prompt's text")
    finish_reason: ChunkFinishReason | None = None
    error: ErrorDetail | None = None
    keepalive: bool = Field(default=False, description="nothing new: the worker is alive, the engine busy")
    model_revision: str | None = Field(default=None, description="last chunk: the weights and precision that answered")


class AbortRequest(BaseModel):
    """Stop generating for a request whose client went away (sent besides closing the stream)."""

    request_id: str


class EmbedRequest(BaseModel):
    request_id: str
    model: str
    tenant: str | None = Field(default=None, description="who asks: checked against the worker's tenants")
    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    dimensions: int | None = Field(default=None, ge=1, description="must equal the model's when set")


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    prompt_tokens: int
    model_revision: str | None = Field(default=None, description="the weights and precision that answered")


class TokenCountRequest(BaseModel):
    model: str
    messages: list[ChatMessage] | None = None
    prompt: str | None = None


class TokenCountResponse(BaseModel):
    count: int
    context_length: int
