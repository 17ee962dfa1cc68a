"""`--quantization int8/int4`: which kernel each linear layer of a model gets.

Where the native kernels load (`tokenyard.engine.native`: x86-64 with AVX512-VNNI and a C++ compiler),
every layer becomes a `BlockQLinear`: 4-bit (Q4_1 grid) or 8-bit (Q8_0 grid) blocks of 32, and the
output projection 8-bit blocks, which is how llama.cpp's Q4_1 files store SmolLM2 (so a model
converted from one keeps its exact weights). Elsewhere torch's kernels (`quant.py`) run the layers
and the output projection stays dense: torch's int4 grid is not the file's Q8_0 one, and
re-quantising it cost more greedy agreement than all the layers together (benchmarks/quality.py).
"""

from __future__ import annotations

from torch import nn

from tokenyard.engine import native
from tokenyard.engine.modeling.blockq import BlockQLinear, blockq_fits
from tokenyard.engine.modeling.llama import LlamaModel
from tokenyard.engine.modeling.quant import INT4_GROUP_SIZE, Int4Linear, Int8Linear

BITS = {"int8": 8, "int4": 4}
OUTPUT_MAX_ROWS = 32  # the output projection's 8-bit kernel up to this many rows (docs/engine.md)


def quantize_linears(
    module: nn.Module, method: str, *, dense: bool | None = None, use_native: bool | None = None
) -> None:
    """Replace the `nn.Linear` layers under `module` in place (see the module's docstring).

    dense: keep each layer's dense weight too, for steps with more rows than its quantised kernel wins at;
    None: only for torch's kernels (the native ones, on the thread pool, take every step size, so the
    weights are held once). use_native: None picks the native kernels wherever they load; False forces torch's."""
    if method not in BITS:
        raise ValueError(f"unknown quantization method {method!r}; use int8 or int4")
    if use_native is None:
        use_native = native.kernels() is not None
    if dense is None:
        dense = not use_native
    for name, child in module.named_children():
        if not isinstance(child, nn.Linear):
            quantize_linears(child, method, dense=dense, use_native=use_native)
        elif name == "lm_head":
            if use_native and blockq_fits(child):
                head = BlockQLinear(child, 8, dense=dense, float_output=True)
                head.max_rows = OUTPUT_MAX_ROWS
                setattr(module, name, head)
                if isinstance(module, LlamaModel):
                    module.embed_from_head()  # tied weights: the embedding reads the head's rows, held once
        else:
            setattr(module, name, _quantized(child, method, dense, use_native))


def _quantized(linear: nn.Linear, method: str, dense: bool, use_native: bool) -> nn.Module:
    if use_native and blockq_fits(linear):
        return BlockQLinear(linear, BITS[method], dense=dense)
    if method == "int4" and linear.in_features % INT4_GROUP_SIZE == 0 and linear.out_features % 16 == 0:
        return Int4Linear(linear, dense=dense)
    return Int8Linear(linear, dense=dense)  # int8, or a shape the int4 kernel cannot tile: the closest it can do
