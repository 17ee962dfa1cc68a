"""SimpleEmbeddingEngine: pooling from the sentence-transformers files, unit vectors, refusals."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine.embedding import SimpleEmbeddingEngine, pool, read_pooling
from tokenyard.engine.loader import load_engine
from tokenyard.errors import ErrorCode, InvalidRequestError
from tokenyard.models import ResolvedModel

CPU = torch.device("cpu")
SENTENCES = ["hello world", "the quick brown fox jumps over the lazy dog", "北京是中国的首都", ""]


@pytest.fixture
async def tiny_engine(tiny_embedding_model_dir: Path) -> AsyncIterator[SimpleEmbeddingEngine]:
    engine = SimpleEmbeddingEngine.load(tiny_embedding_model_dir, device=CPU, dtype=torch.float32)
    await engine.start()
    yield engine
    await engine.shutdown()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # the vectors are unit length


async def test_vectors_have_unit_norm_and_the_models_dimension(tiny_engine: SimpleEmbeddingEngine) -> None:
    vectors, tokens = await tiny_engine.embed_texts(SENTENCES)
    assert tiny_engine.dimensions == 32
    assert [len(v) for v in vectors] == [32] * len(SENTENCES)
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in vectors)
    # hello world -> [CLS] hello world [SEP]; the empty string still has [CLS] [SEP].
    assert tokens == 4 + 11 + 10 + 2


async def test_batch_equals_one_by_one(tiny_engine: SimpleEmbeddingEngine) -> None:
    batch, batch_tokens = await tiny_engine.embed_texts(SENTENCES)
    singles = [await tiny_engine.embed_texts([s]) for s in SENTENCES]
    assert batch_tokens == sum(tokens for _, tokens in singles)
    for together, (alone, _) in zip(batch, singles, strict=True):
        assert together == pytest.approx(alone[0], abs=1e-5)


async def test_token_ids_embed_like_the_same_text(tiny_engine: SimpleEmbeddingEngine) -> None:
    ids = tiny_engine._tokenizer.encode("hello world", add_special_tokens=False)
    from_ids, id_tokens = await tiny_engine.embed_token_ids([ids])
    from_text, text_tokens = await tiny_engine.embed_texts(["hello world"])
    assert from_ids[0] == pytest.approx(from_text[0], abs=1e-6)
    assert id_tokens == text_tokens


async def test_too_long_input_is_refused_not_truncated(tiny_engine: SimpleEmbeddingEngine) -> None:
    assert tiny_engine.context_length == 32  # sentence_bert_config's max_seq_length, not the 64 positions
    with pytest.raises(InvalidRequestError) as raised:
        await tiny_engine.embed_texts(["short", "hello " * 40])
    assert raised.value.code == ErrorCode.CONTEXT_LENGTH_EXCEEDED.value
    assert raised.value.param == "input"
    assert "input 1" in raised.value.message


async def test_token_ids_outside_the_vocabulary_are_a_400(tiny_engine: SimpleEmbeddingEngine) -> None:
    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        await tiny_engine.embed_token_ids([[1, 10**6]])


async def test_empty_request_and_stats(tiny_engine: SimpleEmbeddingEngine) -> None:
    assert await tiny_engine.embed_texts([]) == ([], 0)
    await tiny_engine.embed_texts(SENTENCES)
    stats = tiny_engine.stats()
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert stats.tokens_per_second > 0


def test_pooling_modes_ignore_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # [1, 3, 2], the last is padding
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]


def test_pooling_config_is_read_from_the_sentence_transformers_files(tmp_path: Path) -> None:
    assert read_pooling(tmp_path) == ("mean", True)  # a plain encoder folder
    modules = [{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling(tmp_path) == ("cls", False)  # no Normalize module: vectors as the model made them


async def test_real_minilm_matches_sentence_transformers(default_embedding_model: ResolvedModel) -> None:
    engine = load_engine(default_embedding_model, WorkerConfig(device="cpu"))
    assert isinstance(engine, SimpleEmbeddingEngine)
    assert (engine.dimensions, engine.context_length) == (384, 256)
    try:
        sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
        (weather, sunny, stadium), _ = await engine.embed_texts(sentences)
    finally:
        await engine.shutdown()
    assert cosine(weather, sunny) > cosine(weather, stadium)
    # The similarities sentence-transformers prints for these sentences in its quickstart (sbert.net).
    assert cosine(weather, sunny) == pytest.approx(0.6660, abs=2e-3)
    assert cosine(weather, stadium) == pytest.approx(0.1046, abs=2e-3)
    assert cosine(sunny, stadium) == pytest.approx(0.1411, abs=2e-3)
