"""Inference engines: everything that owns model weights, tokenizers and tensors.

The worker talks to an engine only through the small interfaces in `engine.base`, so a faster
engine replaces a simpler one without touching the worker, the gateway or their tests.

Importing this package sets `OMP_WAIT_POLICY=PASSIVE` (unless already set) before torch loads its
OpenMP runtime, which reads it once: with the default spin-waiting, a 2-thread matmul on a shared
machine ran many times slower whenever another process wanted the CPU, and so did the engine's steps
(docs/engine.md, "Measurements behind the code"). Idle OpenMP threads now sleep instead of spinning;
on an idle machine that costs a wake-up per parallel region.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
