"""Pydantic schemas of OpenAI's HTTP API as tokenyard serves it: requests, responses, stream chunks.

Requests forbid unknown fields, as OpenAI does ("Unrecognized request argument supplied"), and are
validated strictly, as OpenAI does ("expected an integer, but got a string"): pydantic's lax mode
would read `true` as the token id 1 and `"5"` as a count, turning a client's bug into a silent
guess. Fields OpenAI defines that tokenyard does not honour yet are accepted only at their neutral
value; any other value is refused with a 400 naming the field (see `unsupported_fields`), never
dropped.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from tokenyard.protocol.finish import FinishReason

SYSTEM_FINGERPRINT = "fp_tokenyard"


# JSON may escape a lone surrogate ("\ud800"), which decodes to a str that no UTF-8 encoder
# accepts; a decoded valid pair is one code point, so any surrogate left is unpaired.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*")
    @classmethod
    def _valid_unicode(cls, value: object) -> object:
        """Refuse text that cannot be encoded, here as a 400, not later as a 500 (or a worker's
        error) when it is tokenized or forwarded as JSON."""
        if _has_lone_surrogate(value):
            raise ValueError("the text is not valid Unicode: it contains an unpaired surrogate")
        return value


def _integral_float_as_int(value: object) -> object:
    """JSON has one number type: `16.0` is an integer to JSON Schema (and to our published schema),
    so it is read as 16; `16.5`, `"16"` and `true` still fail strict validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral_float_as_int)]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # OpenAI's bounds for `seed`


# --- chat -------------------------------------------------------------------------------------


class TextContentPart(_Request):
    type: Literal["text"]
    text: str


FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for function and schema names


class FunctionCallParam(_Request):
    name: str
    arguments: str = Field(description="the arguments as JSON text, as the model wrote them")


class ToolCallParam(_Request):
    """A call an earlier assistant turn made (sent back with the conversation)."""

    id: str
    type: Literal["function"]
    function: FunctionCallParam


class ChatMessageParam(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = Field(default=None, description="role tool: the id of the call this answers")
    tool_calls: list[ToolCallParam] | None = Field(default=None, description="role assistant: the calls it made")

    def text(self) -> str:
        """The content as one string: text parts joined, as chat templates expect."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ResponseFormatText(_Request):
    type: Literal["text"]


class ResponseFormatJsonObject(_Request):
    """Any JSON object, enforced by constrained decoding."""

    type: Literal["json_object"]


class JsonSchemaFormat(_Request):
    name: str = Field(pattern=FUNCTION_NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="a JSON schema; absent: any JSON object"
    )
    strict: bool | None = Field(
        default=None, description="true: a schema keyword that cannot be enforced is a 400; else it is ignored"
    )


class ResponseFormatJsonSchema(_Request):
    """JSON matching `json_schema.schema`, enforced by constrained decoding."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


class FunctionDefinition(_Request):
    name: str = Field(pattern=FUNCTION_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="a JSON schema of an object; absent: no arguments"
    )
    strict: bool | None = Field(
        default=None, description="true: a schema keyword that cannot be enforced is a 400; else it is ignored"
    )


class ToolParam(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    """Force a call to this function."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class StreamOptions(_Request):
    include_usage: bool = False


class SamplingFields(_Request):
    """Sampling fields shared by chat and text completions (OpenAI's, then vLLM's extensions)."""

    model: str = Field(min_length=1)
    max_tokens: Int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: Int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: Int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    top_k: Int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    min_tokens: Int | None = Field(default=None, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[Int] | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop if s]


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessageParam] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: Int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolParam] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = Field(
        default=None, description='default "auto" with tools, "none" without; see docs/api.md'
    )
    parallel_tool_calls: bool | None = Field(default=None, description="default true: several calls in one answer")
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[Int] | list[list[Int]]
    # OpenAI's default is 16; null means up to the context length; 0 only with echo (the prompt alone).
    max_tokens: Int | None = Field(default=16, ge=0)
    echo: bool = False
    logprobs: Int | None = Field(default=None, ge=0, le=5)
    suffix: str | None = None
    best_of: Int | None = Field(default=None, ge=1, le=20)


EncodingFormat = Literal["float", "base64"]


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1)
    input: str | list[str] | list[Int] | list[list[Int]]
    encoding_format: EncodingFormat = "float"
    dimensions: Int | None = Field(default=None, ge=1)
    user: str | None = None


def unsupported_fields(request: BaseModel) -> list[str]:
    """Fields set to a value tokenyard cannot honour yet; the gateway refuses these with a 400."""
    neutral: dict[str, tuple[object, ...]] = {
        "suffix": (None, ""),
    }
    fields = type(request).model_fields
    return [name for name, allowed in neutral.items() if name in fields and getattr(request, name) not in allowed]


# --- responses --------------------------------------------------------------------------------


def _now() -> int:
    return int(time.time())


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(default=0, description="prompt tokens whose KV came from the prefix cache")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
        )


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="JSON text matching the function's parameters")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None
    refusal: list[ChatTokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: FinishReason | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    system_fingerprint: str = SYSTEM_FINGERPRINT
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A piece of a streamed call: the first has id, type and name (arguments ""), later ones arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    system_fingerprint: str = SYSTEM_FINGERPRINT
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    """The legacy shape: parallel lists, one entry per token (the prompt's first has no logprob)."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    system_fingerprint: str = SYSTEM_FINGERPRINT
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "tokenyard"
    # tokenyard's additions (clients ignore unknown fields): what the model does, so a chat
    # picker can leave out embedding models, and its context length (vLLM's name for it).
    kind: Literal["generate", "embed"] | None = None
    max_model_len: int | None = None


class ModelCardList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
