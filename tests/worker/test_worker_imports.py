"""A chat worker that loads a llama-family model leaves out the libraries it does not use.

Each costs resident memory for the worker's whole life (docs/engine.md, "Sizing memory"):
transformers (its config classes), torch._dynamo and sympy (pulled in by meta-device tensor
operations), SQLAlchemy and Alembic (the store, through the settings).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ABSENT = ("transformers", "torch._dynamo", "sympy", "sqlalchemy", "alembic")
PROGRAM = """
import json, sys
from pathlib import Path
import tokenyard.worker.main  # everything the worker process imports before it loads a model
from tokenyard.config import WorkerConfig
from tokenyard.engine.loader import load_engine
from tokenyard.models import ResolvedModel
from tokenyard.protocol.internal import ModelKind

config = WorkerConfig(device="cpu", quantization="int4", kv_cache_memory=0.01)
engine = load_engine(ResolvedModel("chat", Path(sys.argv[1]), ModelKind.GENERATE), config)
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in {"transformers", "sympy",
      "sqlalchemy", "alembic"} or name.startswith("torch._dynamo"))))
"""


def test_a_chat_worker_loads_without_the_libraries_it_does_not_use(tiny_chat_model_dir: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tiny_chat_model_dir)], capture_output=True, text=True, check=True
    )
    imported = json.loads(run.stdout.strip().splitlines()[-1])
    assert not [name for name in imported if name.startswith(ABSENT)], imported
