"""MLP and layer-mix heads, subword pooling, per-layer sweep: all on the tiny model's cache."""

import errno
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.predict import predict
from pipeline.store import Cache
from pipeline.training import (Features, HeadConfig, RowFeatures, WordMean, build_head, fit,
                               head_logits, load_head, mix_weights)
from pipeline.training import atomic_dir
from pipeline.training import features as features_module
from pipeline.training.subword import word_spans


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

    pooled = WordMean(Rows(), word_ids, example_ids)
    assert pooled.batch(np.array([2, 7, 0]))[:, 0].tolist() == [3.0, 7.5, 0.0]
    assert pooled.batch(np.array([1, 0]))[:, 0].tolist() == [1.0, 0.0]  # one subtoken each
    assert pooled.batch(np.array([8, 3]))[:, 0].tolist() == [7.5, 3.0]  # several each


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


@pytest.fixture(scope="module")
def trained_head(tiny_model, tmp_path_factory):
    """A head fitted once for the tests that damage or rewrite copies of it."""
    from pipeline.embedding import embed

    root = tmp_path_factory.mktemp("trained")
    (root / "corpus.txt").write_text("Call me Ishmael.\nThe quick brown fox.\n" * 10)
    embed(str(root / "corpus.txt"), root / "cache", model=tiny_model, progress=False)
    fit(str(root / "cache"), "first_letter", root / "head", epochs=1, device="cpu")
    return root / "head"


def head_files(head_dir):
    return {p.name: p.read_bytes() for p in sorted(head_dir.iterdir())}


def damage_json(name, change):
    def damage(head_dir):
        meta = json.loads((head_dir / name).read_text())
        change(meta)
        (head_dir / name).write_text(json.dumps(meta))
    return damage


@pytest.mark.parametrize("damage, file, message", [
    (lambda d: (d / "head.safetensors").write_bytes((d / "head.safetensors").read_bytes()[:50]),
     "head.safetensors", "truncated or corrupt"),
    (lambda d: (d / "head.json").write_text('{"head": {"kind": '), "head.json", "not valid JSON"),
    (damage_json("head.json", lambda m: m.pop("layers")), "head.json", "key 'layers' missing"),
    (damage_json("head.json", lambda m: m["label_names"].pop()), "head.json",
     "do not describe a head"),
    (damage_json("head.json", lambda m: m["head"].update(in_features=7)), "head.safetensors",
     "do not match"),
    (lambda d: (d / "lookup.json").write_bytes(b"\xff\xfe"), "lookup.json", "not valid JSON"),
    (lambda d: (d / "metrics.json").unlink(), "", "incomplete head, metrics.json missing"),
])
def test_load_head_names_the_damaged_file(trained_head, tmp_path, damage, file, message):
    head_dir = tmp_path / "head"
    shutil.copytree(trained_head, head_dir)
    damage(head_dir)
    with pytest.raises(PipelineError) as error:
        load_head(head_dir)
    text = str(error.value)
    assert str(head_dir / file) in text and message in text and "\n" not in text


@pytest.mark.parametrize("exchange", [True, False])
def test_a_failed_save_leaves_the_old_head_whole(trained_head, tmp_path, monkeypatch, exchange):
    if not exchange:  # where renameat2 cannot swap, two renames replace the directory
        monkeypatch.setattr(atomic_dir, "_exchange", lambda a, b: False)
    head_dir = tmp_path / "head"
    shutil.copytree(trained_head, head_dir)
    before = head_files(head_dir)
    saved = load_head(head_dir)

    def disk_full(path):
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    def interrupted(path):
        raise KeyboardInterrupt

    with pytest.raises(PipelineError, match="disk full while writing .*unchanged"):
        saved.save(head_dir, {"word_accuracy": 0.0}, companions={"history.csv": disk_full})
    with pytest.raises(KeyboardInterrupt):
        saved.save(head_dir, {"word_accuracy": 0.0}, companions={"history.csv": interrupted})
    assert head_files(head_dir) == before
    assert [p.name for p in tmp_path.iterdir()] == ["head"]  # no temp directory left
    saved.save(head_dir, {"word_accuracy": 0.5})
    assert json.loads((head_dir / "metrics.json").read_text()) == {"word_accuracy": 0.5}
    assert not (head_dir / "history.csv").exists()  # the new head replaced the old one whole


def test_a_killed_save_leaves_the_old_head_whole(trained_head, tmp_path):
    head_dir = tmp_path / "head"
    shutil.copytree(trained_head, head_dir)
    before = head_files(head_dir)
    code = ("import os, signal, sys\n"
            "from pipeline.training import load_head\n"
            "saved = load_head(sys.argv[1])\n"
            "def die(path):\n"
            "    path.write_text('epoch\\n1\\n')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "saved.save(sys.argv[1], {}, companions={'history.csv': die})\n")
    done = subprocess.run([sys.executable, "-c", code, str(head_dir)], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert head_files(head_dir) == before
    assert load_head(head_dir).task == "first_letter"


def test_save_refuses_a_directory_holding_other_files(trained_head, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PipelineError, match="holds other files \\(notes.txt\\)"):
        load_head(trained_head).save(tmp_path, {})
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
