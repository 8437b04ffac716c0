import json

import numpy as np
import pytest
from safetensors.torch import load_file

from pipeline.embedding import embed
from pipeline.errors import PipelineError
from pipeline.evaluation import evaluate, macro_f1
from pipeline.store import Cache, CacheError
from pipeline.training import fit, split_rows


def test_split_holds_out_the_last_examples_contiguously():
    example_ids = np.repeat(np.arange(10), 3)
    train, held_out = split_rows(example_ids, 10, 0.2)
    assert set(example_ids[held_out]) == {8, 9}
    assert set(example_ids[train]) == set(range(8))


def test_macro_f1_averages_over_classes():
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])) == 1.0
    assert macro_f1(np.array([0, 1]), np.array([0, 0])) == pytest.approx((2 / 3 + 0) / 2)


def test_fit_learns_first_letters_from_the_cache(cache_dir, tmp_path):
    metrics = fit(str(cache_dir), "first_letter", tmp_path / "head", epochs=30, lr=0.01,
                  batch_size=512, device="cpu")
    # held-out lines repeat the training vocabulary, so a linear probe must do far better
    # than the majority class
    assert metrics["word_accuracy"] > 0.9
    assert metrics["baselines"]["majority"]["word_accuracy"] < 0.5
    assert metrics["n_examples"] == 12 and metrics["n_tokens"] > 0
    head_dir = tmp_path / "head"
    saved = json.loads((head_dir / "head.json").read_text())
    assert saved["task"] == "first_letter" and len(saved["label_names"]) == 27
    assert saved["layers"] == [0, 1, 2]
    assert load_file(head_dir / "head.safetensors")["weight"].shape == (27, 96)
    history = (head_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss,val_loss") and len(history) == 31
    assert (head_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # the file holds no timings, so that a rerun writes the same bytes; the return adds them
    written = json.loads((head_dir / "metrics.json").read_text())
    assert metrics["train"]["seconds"] > 0 and "seconds" not in written["train"]
    assert written == metrics | {"train": {k: v for k, v in metrics["train"].items()
                                           if k not in ("seconds", "us_per_token")}}


def test_lbfgs_epochs_never_raise_the_full_batch_objective(cache_dir, tmp_path):
    metrics = fit(str(cache_dir), "first_letter", tmp_path / "head", optimizer="lbfgs",
                  epochs=4, weight_decay=1e-3, device="cpu")
    rows = (tmp_path / "head" / "history.csv").read_text().splitlines()[1:]
    objective = [float(row.split(",")[1]) for row in rows]  # before each epoch's step
    assert len(objective) == 4 and objective[-1] < objective[0]
    assert all(later <= earlier for earlier, later in zip(objective, objective[1:]))
    assert metrics["word_accuracy"] > metrics["baselines"]["majority"]["word_accuracy"]
    saved = json.loads((tmp_path / "head" / "head.json").read_text())
    assert saved["fit"]["optimizer"] == "lbfgs"


@pytest.mark.parametrize("options, message", [
    ({"head": "mlp"}, "linear heads"), ({"layers": "mix"}, "linear heads"),
    ({"schedule": "cosine"}, "own step sizes"), ({"optimizer": "sgd"}, "optimizer: Input should be .adamw. or .lbfgs.")])
def test_lbfgs_refuses_what_it_cannot_train(cache_dir, tmp_path, options, message):
    with pytest.raises(PipelineError, match=message):
        fit(str(cache_dir), "first_letter", tmp_path / "head", epochs=1, device="cpu",
            **({"optimizer": "lbfgs"} | options))


def test_fit_reads_only_the_requested_layers(cache_dir, tmp_path):
    metrics = fit(str(cache_dir), "first_letter", tmp_path / "head", layers="1", epochs=1,
                  device="cpu")
    # first_letter labels every token but the specials: one float16 layer of just those rows
    n_labelled = int((Cache(str(cache_dir)).read("word_ids") >= 0).sum())
    assert n_labelled < json.loads((cache_dir / "manifest.json").read_text())["n_tokens"]
    assert metrics["train"]["feature_bytes"] == n_labelled * 32 * 2
    with pytest.raises(CacheError, match="out of range"):
        fit(str(cache_dir), "first_letter", tmp_path / "h2", layers="7", epochs=1)


def test_evaluate_scores_a_head_on_another_cache(cache_dir, tiny_model, tmp_path):
    fit(str(cache_dir), "first_letter", tmp_path / "head", epochs=3, device="cpu")
    other = tmp_path / "other.txt"
    other.write_text("the whale and the sea\nCall me Ishmael.\n")
    embed(str(other), tmp_path / "other", model=tiny_model, progress=False)
    metrics = evaluate(str(tmp_path / "head"), str(tmp_path / "other"), device="cpu")
    assert metrics["n_examples"] == 2 and metrics["n_words"] == 8


def test_evaluate_refuses_a_cache_of_another_model(cache_dir, other_tiny_model, small_corpus,
                                                   tmp_path):
    fit(str(cache_dir), "first_letter", tmp_path / "head", epochs=1, device="cpu")
    embed(str(small_corpus), tmp_path / "other", model=other_tiny_model, progress=False)
    with pytest.raises(PipelineError, match="fingerprint mismatch"):
        evaluate(str(tmp_path / "head"), str(tmp_path / "other"))
