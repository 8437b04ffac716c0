"""Training and evaluation as a library: settings checked first, the cache only read, one
loop for fit and sweep, evaluate on held-out splits, warnings below the lookup baseline."""

import csv
import subprocess
import sys

import pytest
import torch

from pipeline.embedding import embed
from pipeline.errors import PipelineError
from pipeline.evaluation import below_lookup_warnings, evaluate
from pipeline.training import Features, fit, load_head, plots, sweep

FAST = dict(epochs=2, batch_size=512, lr=0.01, device="cpu")


@pytest.mark.parametrize("first", ["pipeline.training", "pipeline.evaluation"])
def test_training_and_evaluation_never_import_the_model(first):
    code = (f"import sys, {first}, pipeline.training, pipeline.evaluation\n"
            "print([m for m in ('transformers', 'pipeline.embedding') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("setting, value", [
    ("epochs", 0), ("lr", 0.0), ("lr", float("nan")), ("batch_size", 0), ("hidden", 0),
    ("dropout", 1.0), ("weight_decay", -0.1), ("weight_decay", float("inf")), ("patience", 0),
    ("val_fraction", 1.0), ("head", "tree")])
def test_settings_out_of_range_fail_before_any_work(tmp_path, setting, value):
    for train in (fit, sweep):
        with pytest.raises(PipelineError) as error:
            # the cache does not exist: the settings are checked before it is opened
            train(str(tmp_path / "no-cache"), "first_letter", tmp_path / "out",
                  **{setting: value})
        message = str(error.value)
        assert message.startswith(f"{setting}: ") and "\n" not in message
    assert not (tmp_path / "out").exists()


def snapshot(directory):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def test_fit_and_evaluate_only_read_the_cache(cache_dir, tmp_path):
    before = snapshot(cache_dir)
    # word_length is computed from the cache's words; it is not stored in it
    metrics = fit(str(cache_dir), "word_length", tmp_path / "head", **FAST)
    assert metrics["baselines"]["lookup"]["key"] == "word form"
    scored = evaluate(str(tmp_path / "head"), str(cache_dir), device="cpu")
    assert scored["split"] == "all" and scored["n_examples"] == 120
    assert snapshot(cache_dir) == before


def test_on_epoch_gets_each_history_row_and_plots_are_optional(cache_dir, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr(plots, "Figure", None)  # as without matplotlib installed
    records = []
    fit(str(cache_dir), "first_letter", tmp_path / "head", on_epoch=records.append, **FAST)
    with open(tmp_path / "head" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in records] == [1, 2]
    assert [{k: float(v) for k, v in row.items()} for row in rows] == records
    assert not (tmp_path / "head" / "loss.png").exists()
    assert load_head(tmp_path / "head").task == "first_letter"


def test_a_diverging_loss_is_one_line_and_writes_no_head(cache_dir, tmp_path, monkeypatch):
    def nan_batch(self, rows, device="cpu"):
        return torch.full((len(rows), self.in_features), float("nan"))
    monkeypatch.setattr(Features, "batch", nan_batch)
    with pytest.raises(PipelineError, match="training diverged") as error:
        fit(str(cache_dir), "first_letter", tmp_path / "head", **FAST)
    assert "\n" not in str(error.value) and "lower --lr" in str(error.value)
    assert not (tmp_path / "head").exists()
    with pytest.raises(PipelineError, match="training diverged: the loss of head 0"):
        sweep(str(cache_dir), "first_letter", tmp_path / "sweep", **FAST)


def test_below_the_lookup_baseline_is_a_warning(cache_dir, tmp_path):
    # a first letter follows from the token id: the lookup table is all but perfect, and a
    # head after one small step is far from it
    metrics = fit(str(cache_dir), "first_letter", tmp_path / "head", epochs=1, lr=1e-4,
                  device="cpu")
    assert metrics["word_accuracy"] < metrics["baselines"]["lookup"]["word_accuracy"]
    [warning] = metrics["warnings"]
    assert "lookup baseline" in warning and "\n" not in warning
    scored = evaluate(str(tmp_path / "head"), str(cache_dir), device="cpu")
    assert "lookup baseline" in scored["warnings"][0]
    fine = {"word_accuracy": 0.9, "baselines": {"lookup": {"word_accuracy": 0.8}}}
    assert below_lookup_warnings(fine) == []


@pytest.fixture
def split_cache(tiny_model, tmp_path):
    lines = ["Call me Ishmael. Some years ago, never mind how long precisely!",
             "The quick brown fox jumped over the lazy dog.", "the whale and the sea"]
    paths = {}
    for name, n in (("train", 30), ("dev", 4), ("test", 6)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("\n".join((lines * n)[:n * 2]) + "\n")
    embed(None, tmp_path / "split-cache", model=tiny_model, progress=False,
          splits={k: str(v) for k, v in paths.items()})
    return tmp_path / "split-cache"


def test_evaluate_scores_the_held_out_split_by_default(split_cache, tmp_path):
    trained = fit(str(split_cache), "first_letter", tmp_path / "head", **FAST)
    head = str(tmp_path / "head")
    scored = evaluate(head, str(split_cache), device="cpu")
    # the same head, rows and lookup table as fit's own test metrics
    assert scored["split"] == trained["split"] == "test" and scored["n_examples"] == 12
    for key in ("word_accuracy", "token_accuracy", "n_words", "baselines"):
        assert scored[key] == trained[key]
    assert evaluate(head, str(split_cache), split="dev", device="cpu")["n_examples"] == 8
    assert evaluate(head, str(split_cache), split="all", device="cpu")["n_examples"] == 80
    with pytest.raises(PipelineError, match="no split 'nope'; give dev, test, train, all"):
        evaluate(head, str(split_cache), split="nope")


def test_sweep_trains_the_chosen_layers_and_their_mix(cache_dir, tmp_path):
    result = sweep(str(cache_dir), "first_letter", tmp_path / "sweep", layers="0,2", **FAST)
    assert [row["layer"] for row in result["layers"]] == ["0", "2", "mix"]
    assert sorted(result["mix_weights"]) == ["0", "2"]
    assert all(row["epochs"] == 2 for row in result["layers"])
