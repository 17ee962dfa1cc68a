"""CPU threads per kind of work: a step runs on one thread, its large matrix multiplies on all of them.

Measured on this 2-core CPU (docs/engine.md, "Threads"): torch splits any elementwise op over more
than 32K elements across its threads, and with OpenMP threads that sleep when idle
(`OMP_WAIT_POLICY=PASSIVE`, see `tokenyard.engine`) every such op pays a wake-up. The RMS norm of
64 rows took 511 µs on two threads and 60 µs on one. Matrix multiplies gain from a second thread
only with many rows (gate/up at 64 rows: 1.3 against 1.7 ms) and not with a few, where they read
weights more than they compute, while the worker's and gateway's event loops want the other core.
Whole decode steps of SmolLM2 (`benchmarks/thread_split.py`): at 64 sequences 154 ms this way against
193 ms on two threads throughout and 210 ms on one; up to 16 sequences one thread throughout is as
fast as any split.
So the engine thread runs on one thread, and the linear layers of a step of more than
`SINGLE_THREAD_MAX_TOKENS` tokens get every thread the process may use. (This is torch's threading;
the native kernels split their work over their own pool, engine/native/pool.cpp.)
"""

from __future__ import annotations

import torch
from torch import nn

SINGLE_THREAD_MAX_TOKENS = 16  # measured: one thread is as fast up to 16 rows, and leaves a core to HTTP


class ThreadBudget:
    """How many threads the linear layers of the current step may use; set per step by the runner."""

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.matmul_threads = 1

    def start_step(self, tokens: int) -> None:
        """Called on the engine thread before each forward: one thread for it, the matmuls' share set."""
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        self.matmul_threads = 1 if tokens <= SINGLE_THREAD_MAX_TOKENS else self.max_threads


class ThreadedLinear(nn.Module):
    """A linear layer (dense or quantised) run with the step's matmul thread budget."""

    def __init__(self, inner: nn.Module, budget: ThreadBudget) -> None:
        super().__init__()
        self.inner = inner
        self.budget = budget

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        threads = self.budget.matmul_threads
        if threads == 1:
            return self.inner(x)
        torch.set_num_threads(threads)  # about 0.2 µs a call: cheap next to any matmul
        try:
            return self.inner(x)
        finally:
            torch.set_num_threads(1)


def thread_linears(module: nn.Module, budget: ThreadBudget) -> None:
    """Wrap every linear layer under `module` (dense or quantised, the output projection too) in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) or hasattr(child, "quantised_mm"):
            setattr(module, name, ThreadedLinear(child, budget))
        else:
            thread_linears(child, budget)
