"""Long inputs: overlapping windows keep every token; --truncate keeps the old behaviour."""

import tracemalloc

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.embedding import ModelError, embed, load_model, plan_windows, tokenize
from pipeline.store import Cache


def test_windows_keep_every_token_once_from_its_best_window():
    ids = np.arange(102, dtype=np.int32)
    word_ids = np.r_[-1, np.arange(100), -1].astype(np.int32)
    pieces = plan_windows(ids, word_ids, width=40, stride=20)
    assert [len(p.input_ids) for p in pieces] == [42] * len(pieces)
    kept = np.concatenate([p.rows[p.keep] for p in pieces])
    assert sorted(kept.tolist()) == list(range(102))
    for p in pieces:
        assert p.rows[0] == 0 and p.rows[-1] == 101  # specials around every window
        assert np.array_equal(p.input_ids, ids[p.rows])
    # windows start at content tokens 0, 20, 40, 60; token 50 (content 49) has at best 10
    # tokens of context on its poorer side, in the window starting at 20
    [owner] = [p for p in pieces if 50 in p.rows[p.keep]]
    assert owner.rows[1] == 21


def brute_force_windows(n_tokens: int, lead: int, trail: int, width: int,
                        stride: int) -> list[tuple[list[int], list[bool]]]:
    """The plan by its definition: every token scored in every window, (rows, keep) per
    window. Memory n_windows x n_tokens: small examples only."""
    n = n_tokens - lead - trail
    starts = list(range(0, n - width, stride)) + [n - width]
    context = np.full((len(starts), n), -1)
    for w, s in enumerate(starts):
        for i in range(s, s + width):
            context[w, i] = min(i - s, s + width - 1 - i)
    best = context.argmax(axis=0)  # the first window on ties
    plan = []
    for w, s in enumerate(starts):
        rows = list(range(lead)) + [lead + i for i in range(s, s + width)] + \
            list(range(n_tokens - trail, n_tokens))
        keep = [w == 0] * lead + [best[i] == w for i in range(s, s + width)] + \
            [w == len(starts) - 1] * trail
        plan.append((rows, keep))
    return plan


def test_windows_equal_the_brute_force_plan():
    rng = np.random.default_rng(0)
    for _ in range(300):
        width = int(rng.integers(1, 40))
        lead, trail = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        n_tokens = lead + int(rng.integers(width + 1, 6 * width + 3)) + trail  # over a window
        stride = int(rng.integers(1, width + 1))
        word_ids = np.r_[np.full(lead, -1), np.arange(n_tokens - lead - trail),
                         np.full(trail, -1)].astype(np.int32)
        ids = rng.integers(0, 1000, n_tokens).astype(np.int32)
        pieces = plan_windows(ids, word_ids, width, stride)
        expected = brute_force_windows(n_tokens, lead, trail, width, stride)
        assert [(p.rows.tolist(), p.keep.tolist()) for p in pieces] == expected, \
            (n_tokens, lead, trail, width, stride)


def test_a_200k_token_line_plans_in_memory_linear_in_its_length():
    n = 200_000
    ids = np.arange(n + 2, dtype=np.int32)
    word_ids = np.r_[-1, np.arange(n), -1].astype(np.int32)
    tracemalloc.start()
    try:
        pieces = plan_windows(ids, word_ids, width=510, stride=255)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pieces) == 784
    assert sum(int(p.keep.sum()) for p in pieces) == n + 2
    # the pieces themselves hold ~13 bytes per row; a windows x tokens matrix would be ~1 GB
    assert peak < 64 * n * 8


def test_two_thousand_word_line_embeds_every_token(tiny_model, tmp_path):
    words = ("call me ishmael some years ago never mind how long precisely having little "
             "or no money in my purse").split()
    line = " ".join(words[i % len(words)] for i in range(2000))
    corpus = tmp_path / "long.txt"
    corpus.write_text("the sea\n" + line + "\n")
    manifest = embed(str(corpus), tmp_path / "c", model=tiny_model, dtype="float32",
                     progress=False)
    cache = Cache(tmp_path / "c")
    lm = load_model(tiny_model, device="cpu")
    expected = lm.tokenizer(line)["input_ids"]
    rows = np.flatnonzero(cache.read("example_ids") == 1)
    assert cache.read("input_ids")[rows].tolist() == expected  # every token, in order
    assert manifest["stats"]["truncated_examples"] == 0
    assert manifest["stats"]["windowed_examples"] == 1
    assert manifest["stats"]["windows"] == len(tokenize(lm.tokenizer, [line], 64)[0].pieces) > 60
    assert manifest["fingerprint"]["long_inputs"] == {"stride": 31}
    # a token in the middle has the state of the window centred on it, not of the whole line
    [encoded] = tokenize(lm.tokenizer, [line], lm.max_length)
    piece = next(p for p in encoded.pieces if 1000 in p.rows[p.keep])
    with torch.inference_mode():
        states = lm.model(input_ids=torch.from_numpy(piece.input_ids[None]).long(),
                          output_hidden_states=True).hidden_states
    position = list(piece.rows).index(1000)
    np.testing.assert_allclose(cache.read_layer(2)[rows[1000]], states[2][0, position].numpy(),
                               atol=2e-3, rtol=1e-2)


def test_truncate_keeps_old_behaviour_and_is_counted(tiny_model, tmp_path):
    corpus = tmp_path / "long.txt"
    corpus.write_text("the sea " * 100 + "\n")
    manifest = embed(str(corpus), tmp_path / "c", model=tiny_model, truncate=True,
                     progress=False)
    assert manifest["n_tokens"] == 64
    assert manifest["stats"]["truncated_examples"] == 1
    assert manifest["stats"]["windowed_examples"] == 0
    assert manifest["fingerprint"]["long_inputs"] == "truncate"


def test_fingerprint_records_the_window_settings_before_reading_the_corpus(
        tiny_model, small_corpus, tmp_path):
    """Streaming embed cannot know whether long examples exist before it writes, so the
    window settings are always part of the fingerprint: another stride is another cache."""
    first = embed(str(small_corpus), tmp_path / "c", model=tiny_model, progress=False)
    assert first["fingerprint"]["long_inputs"] == {"stride": 31}
    with pytest.raises(PipelineError, match="--force"):
        embed(str(small_corpus), tmp_path / "c", model=tiny_model, stride=5, progress=False)
    again = embed(str(small_corpus), tmp_path / "c", model=tiny_model, stride=5, force=True,
                  progress=False)
    assert again["fingerprint"]["long_inputs"] == {"stride": 5}


def test_stride_beyond_a_window_is_refused(tiny_model):
    lm = load_model(tiny_model, device="cpu")
    with pytest.raises(ModelError, match="--stride 63 out of range.*from 1 to 62"):
        tokenize(lm.tokenizer, ["the sea"], lm.max_length, stride=63)
