"""Fixtures: a tiny random BERT with a small WordPiece vocabulary, and small corpora."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest


def pytest_configure(config):
    """Under pytest-xdist (`-n auto`) the workers share the cores: each takes its share of
    torch threads, so they do not oversubscribe the CPU (tests may set process state; the
    library never does)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

WORDS = ("the a an and of to in is was it he she call me ishmael whale sea ship captain "
         "white quick brown fox jumped over lazy dog this test some years ago never mind how "
         "long precisely having little or no money my purse").split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##y"]


def write_tiny_bert(path: Path, max_positions: int = 64, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT and its fast WordPiece tokenizer to `path`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.punctuation)
             + list(string.digits) + list(string.ascii_lowercase)
             + [f"##{c}" for c in string.ascii_lowercase] + WORDS + PIECES)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(path)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=max_positions)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(write_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def other_tiny_model(tmp_path_factory) -> str:
    """Same architecture and vocabulary as tiny_model, other random weights."""
    return str(write_tiny_bert(tmp_path_factory.mktemp("other-bert"), seed=1))


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    """60 lines of text with a blank line, CRLF endings and a byte-order mark, like Gutenberg."""
    lines = []
    for i in range(60):
        lines.append(f"Call me Ishmael {i}. Some years ago, never mind how long precisely!")
        if i % 10 == 0:
            lines.append("")
        lines.append("The quick brown fox jumped over the lazy dog.")
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    return path


@pytest.fixture
def cache_dir(tiny_model, small_corpus, tmp_path) -> Path:
    """A cache of small_corpus embedded with tiny_model, in shards of ~400 tokens."""
    from pipeline.embedding import embed

    embed(str(small_corpus), tmp_path / "cache", model=tiny_model, shard_tokens=400,
          progress=False)
    return tmp_path / "cache"
