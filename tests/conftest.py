"""Shared fixtures: a tiny random BERT with a character-level WordPiece tokenizer, built in code (no network)."""

import string
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

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


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT checkpoint (hidden 32) with its tokenizer, saved like a Hub model."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
