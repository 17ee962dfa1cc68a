#!/usr/bin/env bash
# GPU check for the batching engine, in one command (well under 10 minutes on one GPU):
# the CUDA tests, then a short engine benchmark on SmolLM2-135M at concurrency 1, 16 and 64, with
# decode graphs (the default on CUDA) and without them (--enforce-eager), so their gain is measured.
#   scripts/gpu-check.sh            (from the repository root, with .venv holding a CUDA build of torch)
#   PYTHON=python3 scripts/gpu-check.sh    (any interpreter with torch and tokenyard's dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export TOKENYARD_TEST_HOME=${TOKENYARD_TEST_HOME:-.cache/test-home}

"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu-check: torch sees no CUDA device (is this a CPU-only torch build?)")
print("gpu-check: torch", torch.__version__, "on", torch.cuda.get_device_name(0))
PY

echo "== CUDA tests"
timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/engine/test_cuda.py -rs

echo "== benchmark (engine only, no HTTP): 128 tokens per request, greedy; the second of two rounds"
bench() { timeout 120 "$PY" benchmarks/engine_speed.py --device cuda --home "$TOKENYARD_TEST_HOME" \
    --concurrency 1 16 64 --max-tokens 128 --rounds 2 "$@"; }
bench --dtype bfloat16
bench --dtype bfloat16 --enforce-eager
bench --dtype float16
