"""Streaming fit: shards through a bounded buffer give the same features and metrics."""

import numpy as np
import pytest
import torch

from pipeline.embedding import embed
from pipeline.errors import PipelineError
from pipeline.store import Cache
from pipeline.training import (Features, StreamedFeatures, WordMean, fit, load_features,
                               parse_size)


@pytest.fixture
def cache(tiny_model, small_corpus, tmp_path):
    embed(str(small_corpus), tmp_path / "c", model=tiny_model, shard_tokens=300, progress=False)
    return Cache(tmp_path / "c")


def test_parse_size():
    assert parse_size("1GB") == 10**9 and parse_size("512MiB") == 2**29
    assert parse_size(2048) == 2048 and parse_size("1.5g") == 1_500_000_000
    with pytest.raises(PipelineError, match="give a size like 1GB"):
        parse_size("lots")


def test_streamed_batches_equal_in_memory_and_stay_within_the_buffer(cache):
    shard_bytes = max(s["n_tokens"] for s in cache.shards) * 32 * 2 * 3
    streamed = StreamedFeatures(cache, [0, 1, 2], int(2 * shard_bytes / 0.8) + 1)
    in_memory = Features.load(cache, [0, 1, 2])
    assert streamed.buffer_shards == 2
    rows = np.arange(cache.n_tokens)
    order = streamed.epoch_order(rows, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == rows.tolist() and not np.array_equal(order, rows)
    for start in range(0, len(order), 97):
        batch = order[start:start + 97]
        assert torch.equal(streamed.batch(batch), in_memory.batch(batch))
        assert len(streamed.loaded) <= 2
    assert streamed.shard_reads <= len(cache.shards) + len(order) // 97 // 2


def test_budget_below_one_shard_is_a_clear_error(cache):
    with pytest.raises(PipelineError, match="cannot hold one shard's features"):
        StreamedFeatures(cache, [0, 1, 2], 1000)


def test_max_memory_picks_in_memory_when_the_features_fit(cache):
    assert isinstance(load_features(cache, [0], "1GB"), Features)
    assert isinstance(load_features(cache, [0], 60_000), StreamedFeatures)


def test_streaming_fit_reaches_the_in_memory_accuracy(cache, tmp_path):
    args = dict(epochs=15, lr=0.01, batch_size=256, device="cpu")
    streamed = fit(str(cache.cache_dir), "first_letter", str(tmp_path / "s"), max_memory=200_000,
                   **args)
    in_memory = fit(str(cache.cache_dir), "first_letter", str(tmp_path / "m"), **args)
    assert abs(streamed["word_accuracy"] - in_memory["word_accuracy"]) <= 0.05


def test_word_mean_over_streamed_features_keeps_the_shard_buffer_order(cache):
    shard_bytes = max(s["n_tokens"] for s in cache.shards) * 32 * 2
    streamed = StreamedFeatures(cache, [0], int(2 * shard_bytes / 0.8) + 1)
    pooled = WordMean(streamed, cache.read("word_ids"), cache.read("example_ids"))
    rows = np.arange(cache.n_tokens)
    orders = [f.epoch_order(rows, torch.Generator().manual_seed(3)) for f in (streamed, pooled)]
    assert np.array_equal(*orders) and not np.array_equal(orders[0], rows)
