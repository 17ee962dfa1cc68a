"""Tiny deterministic models for tests: a random-weight Llama chat model and a random-weight BERT encoder.

Both are built from fixed seeds and a built-in corpus, so every run produces byte-identical folders
in well under a second, and both load through the ordinary `AutoTokenizer` / `AutoModel*` paths the
engines use. Their weights are random: they exercise the machinery (streaming, sampling, stopping,
pooling), not answer quality; tests that need real answers use the real default models.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# English, Chinese and a few emoji, so merges exist for common words while rarer characters
# (and every emoji) still split into several byte-level tokens.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Hello world! This is a tiny model used by the tokenyard tests.",
    "Streaming text must never cut a character in half.",
    "Stop strings end a completion early, and are never part of the output.",
    "你好，世界！今天天气很好。",
    "我们在测试流式输出中文字符。",
    "北京是中国的首都。",
    "Emoji: 🙂 🚀 ✨ and mixed 中文 English text.",
] * 4
_SEED = 1234


def make_tiny_chat_model(
    directory: Path, *, hidden_size: int = 64, intermediate_size: int = 128, num_layers: int = 2
) -> Path:
    """A 2-layer Llama (hidden 64, 4 heads, 2 KV heads, context 2048) with a ChatML byte-level BPE tokenizer.

    The sizes can be raised where a test needs rows of 256 (K-quant GGUFs, scripts/make_kquant_fixture.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _chat_tokenizer()
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # leave the test process's global RNG alone
        torch.manual_seed(_SEED)
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    return directory


def _chat_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=CHAT_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def make_tiny_embedding_model(directory: Path) -> Path:
    """A 2-layer BERT (hidden 32) with sentence-transformers files: mean pooling, normalised, 32 tokens."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _wordpiece_tokenizer()
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = BertModel(config)  # with its pooler, so loading reports no missing weights
    model.save_pretrained(directory)
    _write_sentence_transformers_files(directory, dimensions=config.hidden_size, max_seq_length=32)
    return directory


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({word.strip(".,!?") for line in CORPUS for word in line.lower().split()})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    # BERT's pre-tokenizer splits off punctuation and every CJK character, so each needs an entry.
    singles = sorted({char for line in CORPUS for char in line if not char.isascii() or not char.isalnum()} - {" "})
    pieces = special + letters + [f"##{c}" for c in letters] + singles + words
    vocab = {token: i for i, token in enumerate(dict.fromkeys(pieces))}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _write_sentence_transformers_files(directory: Path, *, dimensions: int, max_seq_length: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": dimensions,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    sentence_bert = {"max_seq_length": max_seq_length, "do_lower_case": False}
    (directory / "sentence_bert_config.json").write_text(json.dumps(sentence_bert, indent=2))
