import json

import pytest
from click.testing import CliRunner

from pipeline.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def trained(runner, tiny_model, small_corpus, tmp_path):
    cache, head = tmp_path / "cache", tmp_path / "head"
    result = runner.invoke(main, ["embed", str(small_corpus), "--out", str(cache), "--model",
                                  tiny_model, "--shard-tokens", "500"])
    assert result.exit_code == 0, result.output
    assert "real tokens/s" in result.output
    result = runner.invoke(main, ["fit", str(cache), "--out", str(head), "--epochs", "20",
                                  "--lr", "0.01", "--batch-size", "512"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["word_accuracy"] > 0.9
    return cache, head


def test_predict_prints_one_word_per_line(runner, trained):
    _, head = trained
    result = runner.invoke(main, ["predict", str(head), "The quick brown fox jumped over the lazy dog"])
    assert result.exit_code == 0, result.output
    text = "The quick brown fox jumped over the lazy dog"
    lines = [line.split("\t") for line in result.output.splitlines()]
    assert [w for w, *_ in lines] == text.split()
    assert sum(label == word[0].lower() for word, label, *_ in lines) >= 7
    # word, label, probability, start, end: the offsets slice the word out of the text
    assert all(text[int(start):int(end)] == word and 0 < float(p) <= 1
               for word, _, p, start, end in lines)


def test_predict_reads_stdin_and_writes_json(runner, trained):
    _, head = trained
    result = runner.invoke(main, ["predict", str(head), "--json", "--tokens"],
                           input="Call me Ishmael.\n\nthe sea\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in records] == ["Call me Ishmael.", "the sea"]
    assert records[0]["tokens"][0] == {"token": "[CLS]", "start": 0, "end": 0, "label": None,
                                       "probability": None}
    assert [w["word"] for w in records[0]["words"]] == ["Call", "me", "Ishmael", "."]


def test_predict_refuses_a_model_with_other_weights(runner, trained, other_tiny_model):
    _, head = trained
    result = runner.invoke(main, ["predict", str(head), "--model", other_tiny_model, "the sea"])
    assert result.exit_code == 1
    assert "fingerprint mismatch" in result.output and "Traceback" not in result.output


def test_evaluate_and_info(runner, trained):
    cache, head = trained
    result = runner.invoke(main, ["evaluate", str(head), str(cache)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_examples"] == 120
    result = runner.invoke(main, ["info", str(cache)])
    assert result.exit_code == 0, result.output
    assert "examples:" in result.output and "120" in result.output
    # fit and evaluate computed first_letter in memory: the cache gained no labels
    assert "tasks:" in result.output and "first_letter" not in result.output


def test_windows_1252_corpus_is_one_line_error_and_no_manifest(runner, tiny_model, tmp_path):
    corpus = tmp_path / "cp1252.txt"
    corpus.write_bytes("Caf".encode() + b"\xe9 au lait\nna\xefve\n")
    result = runner.invoke(main, ["embed", str(corpus), "--out", str(tmp_path / "c"),
                                  "--model", tiny_model])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
    assert "line 1, byte offset 3" in result.output
    assert not (tmp_path / "c" / "manifest.json").exists()


@pytest.mark.parametrize("args, message", [
    (["fit", "{cache}", "--out", "{tmp}/h", "--task", "nope"], "unknown task"),
    (["fit", "{tmp}/missing", "--out", "{tmp}/h"], "not a cache"),
    (["predict", "{tmp}/nohead", "x"], "no trained head"),
    (["fit", "{cache}", "--out", "{tmp}/h", "--layers", "9"], "out of range"),
])
def test_bad_input_is_a_clear_error(runner, trained, tmp_path, args, message):
    cache, _ = trained
    args = [a.format(cache=cache, tmp=tmp_path) for a in args]
    result = runner.invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
