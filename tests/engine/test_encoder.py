"""The packed BERT encoder: the same vectors as transformers' BertModel, in float32 and in bfloat16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, DistilBertConfig, DistilBertModel

from tokenyard.engine.embedding import SimpleEmbeddingEngine, pool
from tokenyard.engine.modeling.encoder import ROW_MULTIPLE, Packed, PackedEncoder, Pooling, supports
from tokenyard.models import ResolvedModel

CPU = torch.device("cpu")
TEXTS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "北京是中国的首都",
    "",
    "paris",
    "What is the capital of France? The capital of France is Paris.",
]


def reference(model: torch.nn.Module, rows: list[list[int]], mode: Pooling) -> torch.Tensor:
    """transformers' forward over the right-padded batch, pooled and normalised."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    with torch.inference_mode():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, S, H]
    return F.normalize(pool(hidden, mask, mode), dim=-1)


def rows_of(folder: Path, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in AutoTokenizer.from_pretrained(folder)(texts)["input_ids"]]


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_float32_equals_transformers_on_mixed_lengths(tiny_embedding_model_dir: Path, mode: Pooling) -> None:
    model = AutoModel.from_pretrained(tiny_embedding_model_dir, dtype=torch.float32).eval()
    rows = rows_of(tiny_embedding_model_dir, TEXTS)
    assert len({len(row) for row in rows}) > 3  # the batch really mixes lengths
    batch = Packed.of(rows, CPU)
    assert batch.tokens == sum(len(row) for row in rows) < len(batch.ids)  # filler tokens pad the batch out
    assert len(batch.ids) % ROW_MULTIPLE == 0
    with torch.inference_mode():
        packed = PackedEncoder(model, torch.float32)(batch, mode, True)
    assert packed.shape == (len(TEXTS), 32)
    torch.testing.assert_close(packed, reference(model, rows, mode), atol=1e-5, rtol=1e-5)


def test_a_rows_vector_does_not_depend_on_its_batch(tiny_embedding_model_dir: Path) -> None:
    model = AutoModel.from_pretrained(tiny_embedding_model_dir, dtype=torch.float32).eval()
    encoder = PackedEncoder(model, torch.bfloat16)
    rows = rows_of(tiny_embedding_model_dir, TEXTS)
    with torch.inference_mode():
        together = encoder(Packed.of(rows, CPU), "mean", True)
        alone = torch.cat([encoder(Packed.of([row], CPU), "mean", True) for row in rows])
        reversed_ = encoder(Packed.of(rows[::-1], CPU), "mean", True).flip(0)
    torch.testing.assert_close(together, alone, atol=1e-3, rtol=0)
    torch.testing.assert_close(together, reversed_, atol=1e-3, rtol=0)


def test_bfloat16_matmuls_keep_real_minilm_within_cosine_0_999(default_embedding_model: ResolvedModel) -> None:
    """The precision bar for multiplying in bfloat16 by default (engine.embedding.default_matmul_dtype)."""
    folder = default_embedding_model.path
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    texts = [*TEXTS, "今天北京天气晴朗，最高气温二十五度。", "A " + "long sentence about the weather, " * 20]
    rows = rows_of(folder, texts)
    expected = reference(model, rows, "mean")
    with torch.inference_mode():
        exact = PackedEncoder(model, torch.float32)(Packed.of(rows, CPU), "mean", True)
        fast = PackedEncoder(model, torch.bfloat16)(Packed.of(rows, CPU), "mean", True)
    torch.testing.assert_close(exact, expected, atol=1e-5, rtol=1e-5)
    assert F.cosine_similarity(fast, expected).min().item() >= 0.999


def test_other_encoders_run_through_transformers(tiny_embedding_model_dir: Path) -> None:
    config = DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = DistilBertModel(config).eval()
    assert not supports(model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_embedding_model_dir)
    engine = SimpleEmbeddingEngine(model, tokenizer, pooling="mean", normalize=True, context_length=32)
    rows = [[2, 10, 11, 3], [2, 12, 3]]
    vectors = torch.tensor(engine._forward(rows))
    torch.testing.assert_close(vectors, reference(model, rows, "mean"), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bfloat16_stays_within_cosine_0_999(default_embedding_model: ResolvedModel) -> None:
    folder = default_embedding_model.path
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    rows = rows_of(folder, TEXTS)
    expected = reference(model, rows, "mean")
    cuda = torch.device("cuda")
    with torch.inference_mode():
        fast = PackedEncoder(model.to(cuda), torch.bfloat16)(Packed.of(rows, cuda), "mean", True)
    assert F.cosine_similarity(fast.cpu(), expected).min().item() >= 0.999
