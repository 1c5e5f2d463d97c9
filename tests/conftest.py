"""Shared fixtures: tiny random encoders (BERT and the other architectures the recipe supports) with a
character-level WordPiece tokenizer, built in code and saved as local "pretrained" checkpoints (no network)."""

import string
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM, BertConfig, BertModel, BertTokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run_mtl_classification.py lives at the top level

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["i", "love", "hate", "this", "that", "good", "bad", "happy", "sad", "movie", "day", "not"]


def tiny_vocab() -> list[str]:
    """Whole words, single characters and their continuations: any lower-case ASCII text tokenizes."""
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    return SPECIAL_TOKENS + WORDS + characters + [f"##{c}" for c in string.ascii_lowercase + string.digits]


# A 2-layer BERT with hidden size 32; dropout off so that runs are comparable exactly.
TINY_BERT = dict(
    vocab_size=len(tiny_vocab()),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def build_tiny_bert(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(tiny_vocab())}
    BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(directory)
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(directory)
    return directory


# Each architecture at the tiny size, in its own config's field names, what each needs beyond the shared sizes, and
# with dropout off (ModernBERT's is off by default) so that runs compare exactly.
TINY_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TINY_ENCODERS = {
    "bert": NO_DROPOUT,
    "roberta": NO_DROPOUT,
    "xlm-roberta": NO_DROPOUT,
    "deberta-v2": dict(type_vocab_size=0, relative_attention=True, position_buckets=16, max_relative_positions=32,
                       pos_att_type=["p2c", "c2p"], position_biased_input=False, **NO_DROPOUT),  # DeBERTa-v3's layout
    "modernbert": dict(global_attn_every_n_layers=2, local_attention=16, bos_token_id=2, eos_token_id=3,
                       cls_token_id=2, sep_token_id=3),
    "distilbert": dict(dim=32, n_layers=2, n_heads=2, hidden_dim=37, dropout=0.0, attention_dropout=0.0),
    "electra": dict(embedding_size=16, **NO_DROPOUT),
    "mpnet": NO_DROPOUT,
}  # fmt: skip


def tiny_encoder_config(model_type: str, **overrides):
    sizes = {} if model_type == "distilbert" else TINY_SIZES
    # pad_token_id is the tokenizer's [PAD]: RoBERTa-style position ids count from it.
    fields = dict(vocab_size=len(tiny_vocab()), max_position_embeddings=80, pad_token_id=0, **sizes)
    return AutoConfig.for_model(model_type, **{**fields, **TINY_ENCODERS[model_type], **overrides})


def build_tiny_encoder(directory: Path, model_type: str, **overrides) -> Path:
    """A random masked-language model of `model_type` with the tiny tokenizer, saved as Hub checkpoints are (with
    their pre-training head, which the recipe must leave aside)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(tiny_vocab())}
    BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(directory)
    torch.manual_seed(0)
    AutoModelForMaskedLM.from_config(tiny_encoder_config(model_type, **overrides)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_encoder_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every architecture of `TINY_ENCODERS` as a local checkpoint, by model type."""
    root = tmp_path_factory.mktemp("tiny-encoders")
    return {model_type: build_tiny_encoder(root / model_type, model_type) for model_type in TINY_ENCODERS}


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT checkpoint (hidden 32) with its tokenizer, saved like a Hub model."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
