"""Typed errors shared by every service, and their one mapping to OpenAI's error shape.

Core code raises these; each app turns them into `{"error": {...}}` responses in one exception handler.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    """Machine-readable `code` values, as OpenAI and its clients know them."""

    INVALID_REQUEST = "invalid_request_error"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    CONTENT_FILTERED = "content_filtered"
    MODEL_NOT_FOUND = "model_not_found"
    INVALID_API_KEY = "invalid_api_key"
    ADDRESS_NOT_ALLOWED = "ip_not_allowed"
    RATE_LIMITED = "rate_limit_exceeded"
    QUOTA_EXCEEDED = "quota_exceeded"
    OVERLOADED = "overloaded"
    NO_HEALTHY_WORKER = "no_healthy_worker"
    MODEL_LOADING = "model_loading"
    WORKER_ERROR = "worker_error"
    REGISTRY_WARMING_UP = "registry_warming_up"
    TIMEOUT = "timeout"
    CLIENT_CLOSED = "client_closed_request"
    INTERNAL = "internal_error"


class TokenyardError(Exception):
    """Base of every error that leaves a service as an HTTP response."""

    status_code = 500
    error_type = "server_error"
    default_code: ErrorCode = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: ErrorCode | str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code.value if isinstance(code, ErrorCode) else (code or self.default_code.value)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        """The OpenAI error body: {"error": {"message", "type", "param", "code"}}."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(TokenyardError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = ErrorCode.INVALID_REQUEST


class ContextLengthExceededError(InvalidRequestError):
    """A prompt (or an embedding input) plus the tokens to generate is longer than the model's context.

    The worker and the engines raise it through `engine.context_window.check_context_length`, so every
    refusal reads the same.
    """

    default_code = ErrorCode.CONTEXT_LENGTH_EXCEEDED

    def __init__(
        self, *, prompt_tokens: int, max_tokens: int, context_length: int, param: str, where: str = "the prompt"
    ) -> None:
        super().__init__(
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in {where}, {max_tokens} for the "
            f"completion). Please reduce the length of {where} or of the completion.",
            param=param,
        )


class ContentFilteredError(InvalidRequestError):
    """The request holds a listed word; the message names the list and the rule, never the word."""

    default_code = ErrorCode.CONTENT_FILTERED

    def __init__(self, *, rule_id: str, list_name: str, param: str) -> None:
        super().__init__(
            f"The request was refused by the content filter: {param} matches rule {rule_id} of the "
            f"word list '{list_name}'.",
            param=param,
        )


class ModelNotFoundError(TokenyardError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = ErrorCode.MODEL_NOT_FOUND

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model")


class AuthenticationError(TokenyardError):
    """No API key, or one that is unknown, expired or revoked (OpenAI's 401)."""

    status_code = 401
    error_type = "invalid_request_error"
    default_code = ErrorCode.INVALID_API_KEY


class AddressNotAllowedError(TokenyardError):
    """The client's address is outside the allow-list of the service, the tenant or the key."""

    status_code = 403
    error_type = "invalid_request_error"
    default_code = ErrorCode.ADDRESS_NOT_ALLOWED


class RateLimitedError(TokenyardError):
    """A key's or a tenant's requests, tokens or parallel requests are over their limit."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = ErrorCode.RATE_LIMITED


class QuotaExceededError(TokenyardError):
    """A tenant's or key's calls, tokens or cost for the period are spent; Retry-After is the period's end."""

    status_code = 429
    error_type = "insufficient_quota"
    default_code = ErrorCode.QUOTA_EXCEEDED


class ConflictError(TokenyardError):
    """What the request would create exists already (a tenant of that name)."""

    status_code = 409
    error_type = "invalid_request_error"


class NotFoundError(TokenyardError):
    """An admin operation names something that does not exist (a key prefix)."""

    status_code = 404
    error_type = "invalid_request_error"


class OverloadedError(TokenyardError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = ErrorCode.OVERLOADED


class NoHealthyWorkerError(TokenyardError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = ErrorCode.NO_HEALTHY_WORKER


class ModelLoadingError(NoHealthyWorkerError):
    """The model's workers are still converting or loading it: not "does not exist", just not yet."""

    default_code = ErrorCode.MODEL_LOADING
    RETRY_AFTER = 5.0

    def __init__(self, model: str, detail: str = "") -> None:
        more = f" ({detail})" if detail else ""
        super().__init__(
            f"The model `{model}` is still loading{more}; retry in a few seconds.",
            param="model",
            retry_after=self.RETRY_AFTER,
        )


class WorkerError(TokenyardError):
    """A worker failed or could not be reached while serving a request."""

    status_code = 502
    error_type = "server_error"
    default_code = ErrorCode.WORKER_ERROR


class RequestTimeoutError(TokenyardError):
    """The whole request took longer than the gateway's `request_timeout`."""

    status_code = 504
    error_type = "timeout_error"
    default_code = ErrorCode.TIMEOUT


class ClientClosedRequestError(TokenyardError):
    """The client went away before the answer was ready (nginx's 499); nobody reads this response."""

    status_code = 499
    error_type = "client_closed_request"
    default_code = ErrorCode.CLIENT_CLOSED


class ModelLoadError(Exception):
    """A model could not be found or loaded; the message is one line that says how to fix it."""


class ConfigError(Exception):
    """Bad configuration; the message names the offending key or flag."""


class StoreError(Exception):
    """The store cannot be used: unreachable, or its schema is not this code's; the message says what to do."""


class UpstreamError(TokenyardError):
    """An error another tokenyard service answered with, passed on with its status and fields intact."""

    def __init__(
        self,
        status_code: int,
        error_type: str,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, retry_after=retry_after)
        self.status_code = status_code
        self.error_type = error_type


def error_from_body(status_code: int, body: object, retry_after: float | None = None) -> TokenyardError:
    """Rebuild a typed error from another service's OpenAI-shaped error response."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        return WorkerError(f"upstream answered HTTP {status_code}")
    param = detail.get("param")
    code = detail.get("code")
    return UpstreamError(
        status_code,
        str(detail.get("type") or "server_error"),
        str(detail.get("message") or f"upstream answered HTTP {status_code}"),
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
        retry_after=retry_after,
    )
