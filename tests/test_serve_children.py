"""`tokenyard serve`'s children: the chat worker's flags reach it alone; the embedding worker keeps defaults."""

from __future__ import annotations

from tokenyard.config import load_settings
from tokenyard.serve import CHAT_ONLY_ENV, build_children


def test_chat_flags_reach_the_chat_worker_only() -> None:
    settings = load_settings(None)
    children = {c.name: c for c in build_children(settings, None, {"quantization": "int4", "max_batch_size": 8})}
    chat, embedding = children["chat worker"].argv, children["embedding worker"].argv
    assert chat[chat.index("--quantization") + 1] == "int4"
    assert chat[chat.index("--max-batch-size") + 1] == "8"
    assert "--max-batch-size" not in embedding
    assert embedding[embedding.index("--quantization") + 1] == "none"
    assert "TOKENYARD_WORKER__QUANTIZATION" in children["embedding worker"].env_removed
    assert "TOKENYARD_WORKER__CONTEXT_LENGTH" in CHAT_ONLY_ENV
    assert not children["chat worker"].env_removed  # the chat worker reads the environment as `worker` does
