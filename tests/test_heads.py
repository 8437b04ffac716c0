"""MLP and layer-mix heads, subword pooling, per-layer sweep: all on the tiny model's cache."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline import features as features_module
from pipeline.cli import main
from pipeline.features import Features
from pipeline.fit import fit
from pipeline.heads import HeadConfig, build_head, head_logits, load_head, mix_weights
from pipeline.predict import predict
from pipeline.store import Cache
from pipeline.subword import RowFeatures, WordMean, word_spans


def test_word_mean_averages_each_words_subtokens():
    word_ids = np.array([-1, 0, 1, 1, 1, -1, -1, 0, 0, -1])
    example_ids = np.array([0] * 6 + [1] * 4)
    start, length = word_spans(word_ids, example_ids)
    assert start.tolist() == [0, 1, 2, 2, 2, 5, 6, 7, 7, 9]
    assert length.tolist() == [1, 1, 3, 3, 3, 1, 1, 2, 2, 1]

    class Rows:
        in_features = 1

        def batch(self, rows, device="cpu"):
            return torch.tensor(rows, dtype=torch.float32)[:, None]

    pooled = WordMean(Rows(), word_ids, example_ids).batch(np.array([2, 7, 0]))
    assert pooled[:, 0].tolist() == [3.0, 7.5, 0.0]


def test_mix_head_weights_are_a_softmax_over_layers():
    module = build_head(HeadConfig("mlp", 3 * 4, 5, hidden=8, mix_layers=3))
    assert module(torch.randn(6, 12)).shape == (6, 5)
    weights = mix_weights(module)
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert mix_weights(build_head(HeadConfig("linear", 4, 2))) is None


@pytest.mark.parametrize("head, layers, subword",
                         [("mlp", "0", "mean"), ("linear", "mix", "first")])
def test_every_head_type_saves_loads_and_predicts(cache_dir, tmp_path, head, layers, subword):
    metrics = fit(str(cache_dir), "first_letter", tmp_path / "head", head=head, layers=layers,
                  hidden=64, epochs=15, lr=0.01, batch_size=512, subword=subword,
                  schedule="cosine", weight_decay=0.01, device="cpu")
    assert metrics["word_accuracy"] > 0.8
    assert metrics["baselines"]["lookup"]["key"] == "token id"
    if layers == "mix":
        assert sorted(metrics["head"]["mix_weights"]) == ["0", "1", "2"]
    saved = load_head(tmp_path / "head")
    assert saved.config.kind == head and saved.subword == subword
    [result] = predict(str(tmp_path / "head"), ["The quick brown fox jumped over the lazy dog"],
                       device="cpu")
    assert sum(w["label"] == w["word"][0].lower() for w in result["words"]) >= 7


def test_sweep_gathers_each_batch_once_for_all_heads(cache_dir, tmp_path, monkeypatch):
    calls = []
    real_batch = features_module.Features.batch

    def counting_batch(self, rows, device="cpu"):
        calls.append(len(rows))
        return real_batch(self, rows, device)
    monkeypatch.setattr(features_module.Features, "batch", counting_batch)
    result = CliRunner().invoke(main, ["sweep", str(cache_dir), "--out", str(tmp_path / "sweep"),
                                       "--epochs", "3", "--batch-size", "512", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [row["layer"] for row in sweep["layers"]] == ["0", "1", "2", "mix"]
    n_train = sweep["train"]["n_tokens"]
    # per epoch one gather of the training rows shared by the 4 heads, one of the held-out
    # rows to watch them, and a last one to score: 4 separate fits would gather 4 times this
    assert sum(calls) == 3 * n_train + 4 * sweep["n_tokens"]
    assert "mix weights" in result.output and "lookup" in result.output
    for name in ("layers.png", "confusion.png"):
        assert (tmp_path / "sweep" / name).read_bytes()[:4] == b"\x89PNG"
    assert sweep["best"]["layer"] in {"0", "1", "2", "mix"} and sweep["best"]["per_class"]


def test_row_features_pool_once_what_word_mean_pools_per_batch(cache_dir):
    cache = Cache(cache_dir)
    word_ids, example_ids = cache.read("word_ids"), cache.read("example_ids")
    rows = np.flatnonzero(word_ids >= 0)[::3]
    compact = RowFeatures.from_cache(cache, [0, 2], rows, "mean", word_ids, example_ids)
    assert compact.nbytes == len(rows) * 2 * 32 * 2
    per_batch = WordMean(Features.load(cache, [0, 2]), word_ids, example_ids)
    picked = rows[[5, 0, 17]]
    # the pooled copy is held at 2 bytes a value (float16 or bfloat16: 8 significant bits)
    np.testing.assert_allclose(compact.batch(picked).float().numpy(),
                               per_batch.batch(picked).numpy(), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("bf16_cpu, held, batch_dtype", [
    (True, torch.bfloat16, torch.bfloat16), (False, torch.float16, torch.float32)])
def test_features_held_at_two_bytes_and_head_logits_agree_with_float32(
        cache_dir, monkeypatch, bf16_cpu, held, batch_dtype):
    monkeypatch.setattr(features_module, "cpu_supports_bf16", lambda: bf16_cpu)
    cache = Cache(cache_dir)
    features = Features.load(cache, [0, 2])
    assert [t.dtype for t in features.tensors] == [held, held]
    assert features.nbytes == cache.layer_bytes([0, 2])
    rows = np.array([7, 0, 3, 11])
    x = features.batch(rows)
    assert x.dtype == batch_dtype and x.shape == (4, 64)
    exact = np.concatenate([cache.read_layer(0)[rows], cache.read_layer(2)[rows]], axis=1)
    np.testing.assert_allclose(x.float().numpy(), exact, rtol=1e-2, atol=1e-2)
    torch.manual_seed(0)
    module = build_head(HeadConfig("linear", 64, 5))
    logits = head_logits(module, x)
    assert logits.dtype == torch.float32
    expected = module(torch.from_numpy(exact).float()).detach()
    torch.testing.assert_close(logits.detach(), expected, rtol=0.05, atol=0.05)
