"""Retry on another worker: a request that fails before its first token is not lost.

A worker that cannot be reached, is draining (503) or is saturated (429) is excluded and the request
is dispatched again, up to `max_attempts` workers. Unreachable workers are reported to the
controller, which probes and evicts them at once. When every worker is saturated the client gets a
429 whose Retry-After is the shortest any worker asked for; when none is left, a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from tokenyard.errors import NoHealthyWorkerError, OverloadedError, TokenyardError, WorkerError
from tokenyard.gateway.router import FailoverObserver
from tokenyard.protocol.internal import DispatchResponse

logger = logging.getLogger(__name__)

T = TypeVar("T")
RETRYABLE_STATUSES = frozenset({429, 503})


class Dispatcher(Protocol):
    """What failover needs of the router (`gateway.router.Router`)."""

    @property
    def observer(self) -> FailoverObserver | None:
        """Told of every retry and resumed stream, if set."""
        ...

    async def dispatch(
        self, model: str, exclude: list[str] | None = None, tenant: str | None = None
    ) -> DispatchResponse: ...

    def report_failure(self, worker_id: str, error: str) -> None: ...


def _is_retryable(error: TokenyardError) -> bool:
    return isinstance(error, WorkerError) or error.status_code in RETRYABLE_STATUSES


def _final_error(failures: list[TokenyardError], model: str) -> TokenyardError:
    """What the client hears once no untried worker is left."""
    saturated = [f for f in failures if f.status_code == 429]
    if saturated:
        # Capacity exists but is busy: the client should come back, not conclude the model is gone.
        waits = [f.retry_after for f in saturated if f.retry_after is not None]
        return OverloadedError(
            f"Every worker serving `{model}` is at capacity; retry shortly.",
            retry_after=min(waits) if waits else 1.0,
        )
    return NoHealthyWorkerError(f"No worker could serve `{model}`: {failures[-1].message}", retry_after=1.0)


async def with_failover(
    router: Dispatcher,
    model: str,
    attempt: Callable[[DispatchResponse], Awaitable[T]],
    max_attempts: int,
    exclude: list[str] | None = None,
    tenant: str | None = None,
) -> T:
    """Run `attempt` on a dispatched worker, moving to another worker on a retryable failure.

    `exclude` names workers already known to have failed this request (a stream being resumed).
    """
    failures: list[TokenyardError] = []
    tried: list[str] = list(exclude or [])
    for _ in range(max_attempts):
        try:
            target = await router.dispatch(model, exclude=tried, tenant=tenant)
        except NoHealthyWorkerError:
            if failures:
                raise _final_error(failures, model) from None
            raise
        except TokenyardError as exc:
            if failures and exc.status_code == 503:
                raise _final_error(failures, model) from None
            raise
        try:
            return await attempt(target)
        except TokenyardError as exc:
            if not _is_retryable(exc):
                raise
            logger.warning("worker %s failed before the first token (%s); trying another", target.worker_id, exc)
            failures.append(exc)
            tried.append(target.worker_id)
            if isinstance(exc, WorkerError):
                router.report_failure(target.worker_id, exc.message)
            if router.observer is not None:
                router.observer.retried(model)
    raise _final_error(failures, model)
