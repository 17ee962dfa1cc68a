"""Dispatch: which healthy worker gets the next request for a model.

Each policy is a small object with one method, `choose(model, candidates)`, over the registry's
healthy candidates (ordered by worker id). They hold only their own cursors and random source, so
they are pure bookkeeping and testable without a registry or a clock. `dispatch` puts the registry
and a policy together and turns "nobody to send it to" into the right typed error.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from typing import Protocol

from tokenyard.controller.registry import WorkerEntry, WorkerRegistry
from tokenyard.errors import ModelLoadingError, ModelNotFoundError, NoHealthyWorkerError
from tokenyard.protocol.internal import DispatchPolicy, DispatchResponse, WorkerState


class Policy(Protocol):
    def choose(self, model: str, candidates: Sequence[WorkerEntry]) -> WorkerEntry:
        """Pick one of `candidates` (never empty) for a request to `model`."""
        ...


class RoundRobin:
    """Cycle through a model's workers, one cursor per model."""

    def __init__(self) -> None:
        self._cursors: dict[str, int] = {}

    def choose(self, model: str, candidates: Sequence[WorkerEntry]) -> WorkerEntry:
        cursor = self._cursors.get(model, 0)
        self._cursors[model] = cursor + 1
        return candidates[cursor % len(candidates)]


class ShortestQueue:
    """Least load relative to speed: (reported queue + dispatched since that report) / speed.

    Counting what we dispatched since the report spreads a burst that arrives within one heartbeat
    interval; the next report replaces the guess with the worker's own count. Ties go round robin,
    so equal workers share load even when reports keep resetting the counts to the same values.
    """

    def __init__(self) -> None:
        self._tie_break = RoundRobin()

    def choose(self, model: str, candidates: Sequence[WorkerEntry]) -> WorkerEntry:
        best = min(entry.load() for entry in candidates)
        tied = [entry for entry in candidates if math.isclose(entry.load(), best, rel_tol=1e-9)]
        return self._tie_break.choose(model, tied)


class Lottery:
    """A random worker, weighted by speed; the random source is injectable for tests."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def choose(self, model: str, candidates: Sequence[WorkerEntry]) -> WorkerEntry:
        return self._rng.choices(candidates, weights=[entry.speed for entry in candidates])[0]


def make_policy(policy: DispatchPolicy, rng: random.Random | None = None) -> Policy:
    """The policy object for a configured DispatchPolicy."""
    if policy is DispatchPolicy.SHORTEST_QUEUE:
        return ShortestQueue()
    if policy is DispatchPolicy.ROUND_ROBIN:
        return RoundRobin()
    return Lottery(rng)


def dispatch(
    registry: WorkerRegistry,
    policy: Policy,
    model: str,
    exclude: Collection[str] = (),
    tenant: str | None = None,
) -> DispatchResponse:
    """Pick a healthy worker for `model` and count the request against it until its next report.

    `exclude` names workers that already failed this request (a retry goes elsewhere). Only shared
    workers and `tenant`'s own are eligible: another tenant's worker is never chosen, however idle.
    Raises ModelNotFoundError when no worker serves (or recently served) the model, or only other
    tenants' workers do (it does not exist for this tenant), ModelLoadingError when its eligible
    workers are still loading it, and NoHealthyWorkerError when eligible workers exist but none is
    healthy and untried.
    """
    candidates = [
        entry for entry in registry.candidates(model) if entry.worker_id not in exclude and entry.serves(tenant)
    ]
    if not candidates:
        serving = registry.serving(model)
        if not registry.knows_model(model) or (serving and not any(e.serves(tenant) for e in serving)):
            raise ModelNotFoundError(model)
        loading = [entry for entry in serving if entry.state is WorkerState.LOADING and entry.serves(tenant)]
        if loading:
            raise ModelLoadingError(model, loading[0].reason)
        raise NoHealthyWorkerError(_no_healthy_message(registry, model))
    chosen = policy.choose(model, candidates)
    chosen.dispatched_since_report += 1
    return chosen.route()


def _no_healthy_message(registry: WorkerRegistry, model: str) -> str:
    states = [
        f"{entry.worker_id} {entry.state.value}" + (f" ({entry.reason})" if entry.reason else "")
        for entry in registry.serving(model)
    ]
    detail = f" Workers: {'; '.join(states)}." if states else " Its last worker unregistered."
    return f"No healthy worker is serving model `{model}` right now; try again shortly.{detail}"
