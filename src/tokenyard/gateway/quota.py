"""Quota admission: reserve before a metered call runs, settle or release when its record is finished.

The reservation is the most the call can use: one call; as tokens, the request body's length in
bytes (no byte-level tokenizer makes more prompt tokens than the prompt has bytes, and the JSON
around the text is longer than a chat template's few tokens per message) plus every token each
choice may generate (`max_tokens`, or the model's context length when unset); and the most that
costs. The settlement is deferred until after the answer has gone (`QuotaService.defer`, applied
in batches by `Metering.settle_forever`): it gives back the part of the reservation the call did
not use, so until it runs the counter errs high, never low. A
refusal is a 429 `quota_exceeded` with Retry-After at the period's end. If the quota store cannot
be reached, a tenant known to have no quota is served and one with a quota is refused with a 503:
a quota is never passed because a database was down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenyard.errors import QuotaExceededError, TokenyardError
from tokenyard.gateway.body import read_body, replay_body
from tokenyard.gateway.metering import METERED_ENDPOINTS, Metering
from tokenyard.gateway.outcome import RequestTracker
from tokenyard.governance.quotas import Amounts, QuotaService, Reservation, to_micros
from tokenyard.governance.records import usage_record
from tokenyard.protocol.outcome import RequestOutcome
from tokenyard.web import send_error

logger = logging.getLogger(__name__)
DEFAULT_MAX_NEW_TOKENS = 4096  # when neither max_tokens nor the model's context length is known


class QuotaUnavailableError(TokenyardError):
    status_code = 503
    error_type = "service_unavailable"


def most_new_tokens(data: dict[str, Any], context_length: int | None) -> int:
    """Every completion token the request may generate, all choices and prompts together."""
    limit = data.get("max_completion_tokens") or data.get("max_tokens") or context_length or DEFAULT_MAX_NEW_TOKENS
    choices = max(int(data.get("n") or 1), int(data.get("best_of") or 1))
    prompt = data.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
    return int(limit) * choices * prompts


class ReservationBatcher:
    """Sends the reservations asked for while one batch is at the counters as the next batch.

    Under load calls arrive together (a step of the engine ends many at once), and a batch shares one
    thread hop and one transaction (on SQLite one fsync; on Redis one round trip) instead of paying
    one each. A call that finds nothing in flight goes at once, so an idle gateway adds no wait."""

    def __init__(self, quotas: QuotaService) -> None:
        self.quotas = quotas
        self._waiting: list[tuple[str, str | None, Amounts, asyncio.Future[Reservation]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def reserve(self, tenant: str, key_prefix: str | None, amounts: Amounts) -> Reservation:
        """As `QuotaService.reserve`: the reservation, or QuotaExceededError, or the store's error."""
        future: asyncio.Future[Reservation] = asyncio.get_running_loop().create_future()
        self._waiting.append((tenant, key_prefix, amounts, future))
        if self._drain is None:
            self._drain = asyncio.create_task(self._send_batches())
        return await future

    async def _send_batches(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await asyncio.to_thread(self.quotas.reserve_many, [call[:3] for call in batch])
                except Exception as exc:
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (*_, future), result in zip(batch, results, strict=True):
                    if isinstance(result, QuotaExceededError):
                        if not future.done():
                            future.set_exception(result)
                    elif future.done():  # the caller is gone (its client left): give the room back
                        self.quotas.defer(result, Amounts())
                    else:
                        future.set_result(result)
        finally:
            self._drain = None


class QuotaMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._batcher: ReservationBatcher | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metering: Metering | None = getattr(scope["app"].state, "metering", None) if "app" in scope else None
        state = scope.get("state", {})
        principal = state.get("principal")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in METERED_ENDPOINTS
            or metering is None
            or metering.quotas is None
            or principal is None
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        data = _json_object(body)
        tracker = state.get("outcome")
        if isinstance(tracker, RequestTracker):
            tracker.model = str(data.get("model") or "")  # a refused call is recorded against its model too
        try:
            reservation = await self._reserve(scope, metering, principal, body, data)
        except TokenyardError as exc:
            await send_error(exc, scope, receive, send)
            return
        if isinstance(tracker, RequestTracker):

            def settle(outcome: RequestOutcome) -> None:
                usage = usage_record(outcome, metering.prices)
                tokens = usage.prompt_tokens + usage.billed_completion_tokens if usage.calls_billed else 0
                assert metering.quotas is not None
                metering.quotas.defer(reservation, Amounts(usage.calls_billed, tokens, to_micros(usage.cost)))

            tracker.on_finish(settle)
        await self.app(scope, replay_body(body, receive), send)

    async def _reserve(
        self, scope: Scope, metering: Metering, principal: Any, body: bytes, data: dict[str, Any]
    ) -> Any:
        model = str(data.get("model") or "")
        context = None
        limited = data.get("max_completion_tokens") or data.get("max_tokens")
        if scope["path"] != "/v1/embeddings" and not limited:  # only then is the context length the bound
            router = scope["app"].state.router
            context = next((m.context_length for m in await router.models() if m.name == model), None)
        new_tokens = 0 if scope["path"] == "/v1/embeddings" else most_new_tokens(data, context)
        cost = metering.prices.most(model, principal.tenant, len(body), new_tokens)
        amounts = Amounts(calls=1, tokens=len(body) + new_tokens, cost_micros=to_micros(cost))
        assert metering.quotas is not None
        if self._batcher is None or self._batcher.quotas is not metering.quotas:
            self._batcher = ReservationBatcher(metering.quotas)
        try:
            return await self._batcher.reserve(principal.tenant, principal.key_prefix, amounts)
        except QuotaExceededError:
            raise
        except Exception as exc:
            logger.warning("quota store unavailable for tenant %s: %s", principal.tenant, exc)
            raise QuotaUnavailableError(
                "Quotas cannot be checked right now (the quota store is unreachable); retry shortly.",
                code="quota_unavailable",
                retry_after=5,
            ) from None


def _json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or {} (validation refuses it later, and the reservation is released)."""
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
