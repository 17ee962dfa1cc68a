"""The thread budget: one thread per step, the linear layers of large steps on all of them."""

from __future__ import annotations

import threading

import torch
from torch import nn

from tokenyard.engine.modeling.quant import Int8Linear
from tokenyard.engine.modeling.threads import SINGLE_THREAD_MAX_TOKENS, ThreadBudget, ThreadedLinear, thread_linears


def in_a_thread(fn):  # type: ignore[no-untyped-def]
    """Run `fn` in a fresh thread (as the engine does), so this test's thread settings stay its own."""
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(fn()))
    worker.start()
    worker.join()
    return result[0]


def test_linear_layers_use_the_budget_and_give_the_threads_back() -> None:
    budget = ThreadBudget(max_threads=2)
    seen: list[int] = []

    class Probe(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return super().forward(x)

    layer = ThreadedLinear(Probe(8, 4), budget)
    x = torch.randn(SINGLE_THREAD_MAX_TOKENS + 1, 8)

    def steps() -> list[int]:
        budget.start_step(tokens=1)
        small = torch.get_num_threads()
        layer(x[:1])
        budget.start_step(tokens=SINGLE_THREAD_MAX_TOKENS + 1)
        out = layer(x)
        torch.testing.assert_close(out, layer.inner(x))
        return [small, torch.get_num_threads()]

    assert in_a_thread(steps) == [1, 1]  # the step itself always runs on one thread
    assert seen[0] == 1  # a small step's matmul: one thread
    assert seen[1] == 2  # a large step's matmul: the budget's maximum


def test_thread_linears_wraps_dense_and_quantised_layers() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), Int8Linear(nn.Linear(32, 16)))
    thread_linears(model, ThreadBudget(max_threads=2))
    assert isinstance(model[0], ThreadedLinear)
    assert isinstance(model[1], nn.ReLU)
    assert isinstance(model[2], ThreadedLinear)
    assert isinstance(model[2].inner, Int8Linear)
