"""Make tests/fixtures/tiny-kquant.gguf: a tiny random llama model quantised by llama.cpp's llama-quantize.

The model is tests/tiny_models.py's chat model at rows of 256 (hidden 256, MLP 256, one layer; K-quants
need rows in multiples of 256). It is written as a float32 GGUF with the `gguf` package (llama.cpp's
own converter refuses the tiny tokenizer, whose pre-tokenizer it does not know), Q and K rows reordered
as llama.cpp's converter does, then quantised by `llama-quantize` to Q4_K_M with per-tensor overrides,
so that one small file holds every type the engine keeps as it is:

    attn_q, attn_k, ffn_gate: Q4_K    ffn_up: Q5_K    attn_v, ffn_down, token_embd: Q6_K    attn_output: Q8_0

(Q/K/V and gate/up are fused in the engine, so the file also exercises layers that mix types.)
Build llama-quantize first (minutes on 2 cores), e.g. from llama-cpp-python's sdist as
benchmarks/llama_build.py does, with `--target llama-quantize`; then:

    .venv/bin/python scripts/make_kquant_fixture.py --quantize PATH/TO/llama-quantize
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-kquant.gguf"
OVERRIDES = {"attn_v": "q6_k", "attn_output": "q8_0", "ffn_up": "q5_k", "ffn_down": "q6_k"}
LAYER_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary row order (h, half s, i) -> llama.cpp's (h, i, s)."""
    rows, columns = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, columns).swapaxes(1, 2).reshape(rows, columns)


def write_float_gguf(folder: Path, out: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    tensors = load_file(folder / "model.safetensors")
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_name("tokenyard tiny K-quant test model")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, folder, config)
    writer.add_tensor("token_embd.weight", tensors["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", tensors["model.norm.weight"])
    for name, tensor in sorted(tensors.items()):
        if not name.startswith("model.layers."):
            continue
        index, rest = name.removeprefix("model.layers.").split(".", 1)
        module = rest.removesuffix(".weight")
        if module == "self_attn.q_proj":
            tensor = llama_cpp_rows(tensor, config["num_attention_heads"])
        elif module == "self_attn.k_proj":
            tensor = llama_cpp_rows(tensor, config["num_key_value_heads"])
        writer.add_tensor(f"blk.{index}.{LAYER_NAMES[module]}.weight", np.ascontiguousarray(tensor))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer: gguf.GGUFWriter, folder: Path, config: dict[str, Any]) -> None:
    model = json.loads((folder / "tokenizer.json").read_text())
    vocab = model["model"]["vocab"] | {token["content"]: token["id"] for token in model["added_tokens"]}
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {token["content"] for token in model["added_tokens"] if token["special"]}
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in model["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in special else 1 for token in tokens])  # 3: control, 1: normal
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template((folder / "chat_template.jinja").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", type=Path, required=True, help="Path of llama.cpp's llama-quantize.")
    parser.add_argument("--out", type=Path, default=FIXTURE, help="Where to write (default: %(default)s).")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import make_tiny_chat_model

    with tempfile.TemporaryDirectory() as scratch:
        folder = make_tiny_chat_model(Path(scratch) / "hf", hidden_size=256, intermediate_size=256, num_layers=1)
        float_file = Path(scratch) / "tiny-f32.gguf"
        write_float_gguf(folder, float_file)
        overrides = [arg for name, kind in OVERRIDES.items() for arg in ("--tensor-type", f"{name}={kind}")]
        command = [str(args.quantize), *overrides, "--token-embedding-type", "q6_k", str(float_file), str(args.out)]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*command, "Q4_K_M"], check=True)
    print(f"{args.out}: {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
