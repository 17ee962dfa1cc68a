"""The rate-limit layer: each /v1 call admitted against its key's and its tenant's limits.

Requests per minute count every POST to /v1; tokens per minute reserve the prompt's estimate
(a quarter of the body's bytes: at most ~4 bytes per token for English, 3 for Chinese) plus every
token the request may generate (max_tokens times its choices); when the request ends the
reservation is corrected to the tokens the worker really used. A request without max_tokens
reserves its prompt only. A refusal is a 429 `rate_limit_exceeded` whose Retry-After is the wait
the limiter computed. If Redis cannot be reached the request is let through (and logged): a rate
limit protects capacity, and a Redis outage should not stop the service (quotas, which are money,
fail closed instead).
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.errors import RateLimitedError
from tokenyard.gateway.auth import is_api_path
from tokenyard.gateway.body import read_body, replay_body
from tokenyard.gateway.outcome import RequestOutcome, RequestTracker
from tokenyard.governance.principal import Limits, Principal
from tokenyard.governance.ratelimit import Check, Denial, Limiter
from tokenyard.web import error_response

logger = logging.getLogger(__name__)
BYTES_PER_TOKEN = 4


def reserved_tokens(body: bytes) -> int:
    """The prompt's estimate plus every token the request may generate."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return math.ceil(len(body) / BYTES_PER_TOKEN)
    new = data.get("max_completion_tokens") or data.get("max_tokens") or 0
    choices = max(_int(data.get("n")), _int(data.get("best_of")))
    prompt = data.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
    return math.ceil(len(body) / BYTES_PER_TOKEN) + _int(new, 0) * choices * prompts


def _int(value: object, default: int = 1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def checks_for(principal: Principal, tokens: int) -> list[Check]:
    checks: list[Check] = []
    scopes: list[tuple[str, Limits]] = [(f"tenant:{principal.tenant}", principal.tenant_limits)]
    if principal.key_prefix is not None:
        scopes.append((f"key:{principal.key_prefix}", principal.key_limits))
    for scope, limits in scopes:
        if limits.rpm:
            checks.append(Check("rpm", f"{scope}:rpm", limits.rpm))
        if limits.tpm:
            checks.append(Check("tpm", f"{scope}:tpm", limits.tpm, max(1, tokens)))
        if limits.max_parallel:
            checks.append(Check("parallel", f"{scope}:parallel", limits.max_parallel))
    return checks


def describe(denial: Denial) -> str:
    whose = denial.check.key.rsplit(":", 1)[0].replace(":", " ", 1)
    if denial.check.kind == "parallel":
        return f"Too many requests at once for {whose} (limit {denial.check.limit}); retry when one has finished."
    unit = "requests" if denial.check.kind == "rpm" else "tokens"
    check = denial.check
    if check.cost > check.limit:
        return f"This request needs {check.cost} tokens, more than the {check.limit} per minute allowed for {whose}."
    return f"Rate limit reached for {whose}: {denial.check.limit} {unit} per minute."


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limiter: Callable[[], Limiter | None]) -> None:
        self.app = app
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state", {})
        principal = state.get("principal")
        limiter = self._limiter() if scope["type"] == "http" else None
        if (
            limiter is None
            or scope["method"] != "POST"
            or not is_api_path(scope["path"])
            or not isinstance(principal, Principal)
            or not (principal.key_limits.any() or principal.tenant_limits.any())
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        checks = checks_for(principal, reserved_tokens(body))
        request_id = str(state.get("request_id") or uuid.uuid4().hex)
        try:
            denial = await limiter.admit(request_id, checks)
        except (RedisError, OSError) as exc:
            logger.warning("rate limits unavailable (%s); admitting %s", type(exc).__name__, request_id)
            await self.app(scope, replay_body(body, receive), send)
            return
        if denial is not None:
            error = RateLimitedError(describe(denial), retry_after=max(1.0, math.ceil(denial.retry_after)))
            await error_response(error)(scope, receive, send)
            return
        tracker = state.get("outcome")
        if isinstance(tracker, RequestTracker):
            # Settled when the request's record is finished, which happens exactly once, shielded
            # from cancellation, even when the client leaves mid-answer: the tokens per minute are
            # then corrected to what the engine really did, not left at the reservation.
            async def settle(outcome: RequestOutcome) -> None:
                await self._settle(limiter, request_id, checks, outcome)

            tracker.on_finish(settle)
            await self.app(scope, replay_body(body, receive), send)
            return
        try:
            await self.app(scope, replay_body(body, receive), send)
        finally:
            await self._settle(limiter, request_id, checks, None)

    async def _settle(
        self, limiter: Limiter, request_id: str, checks: list[Check], outcome: RequestOutcome | None
    ) -> None:
        used = outcome.prompt_tokens + outcome.generated_tokens if outcome is not None else None
        try:
            await limiter.settle(request_id, checks, used)
        except (RedisError, OSError) as exc:  # parallel slots then expire on their own
            logger.warning("could not settle rate limits of %s: %s", request_id, type(exc).__name__)
