"""Predictions users can use: per word a label, its probability, character offsets that slice
the word out of the text, the top-k alternatives; special tokens never labelled; the
no-letter class named."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import pipeline
from pipeline.cli import main
from pipeline.tasks import NO_LETTER

FOX = "The quick brown fox jumped over the lazy dog"


@pytest.fixture(scope="module")
def head(tiny_model, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("predict") / "corpus.txt"
    corpus.write_text("".join(f"Call me Ishmael {i}, the whale!\n{FOX}.\n" for i in range(40)))
    cache = pipeline.embed(corpus, corpus.parent / "cache", model=tiny_model, progress=False)
    return pipeline.fit(cache, out=corpus.parent / "head", task="first_letter", epochs=20,
                        lr=0.01, batch_size=512)


def test_words_carry_label_probability_offsets_and_top_k(head):
    text = "  Call me\tIshmael, 42 whales!"  # odd spacing: offsets must still slice back
    [result] = head.predict(text, top_k=4)
    assert [w["word"] for w in result["words"]] == ["Call", "me", "Ishmael", ",", "42",
                                                    "whales", "!"]
    for word in result["words"]:
        assert text[word["start"]:word["end"]] == word["word"]
        assert 0 < word["probability"] <= 1
        top = word["top"]
        assert len(top) == 4 and top[0]["label"] == word["label"]
        assert top[0]["probability"] == word["probability"]
        assert [t["probability"] for t in top] == sorted((t["probability"] for t in top),
                                                         reverse=True)
        assert sum(t["probability"] for t in top) <= 1 + 1e-5
    assert NO_LETTER == "-" and "" not in head.label_names
    assert {w["label"] for w in result["words"] if w["word"] in (",", "!")} <= set(
        head.label_names)


def test_special_tokens_never_get_a_label(head):
    [result] = head.predict("the sea")
    specials = [t for t in result["tokens"] if t["token"] in ("[CLS]", "[SEP]")]
    assert len(specials) == 2
    assert all(t["label"] is None and t["probability"] is None for t in specials)
    assert all(t["label"] in head.label_names for t in result["tokens"] if t not in specials)


def test_cli_json_gives_offsets_that_slice_back_and_top_k(head):
    result = CliRunner().invoke(main, ["predict", str(head.path), FOX, "--json",
                                       "--top-k", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert set(record) == {"text", "words"}
    assert [FOX[w["start"]:w["end"]] for w in record["words"]] == FOX.split()
    assert all(len(w["top"]) == 2 and 0 < w["probability"] <= 1 for w in record["words"])


def test_probabilities_are_the_heads_softmax(head):
    """The reported probability is the head's softmax of the word's features, not a score
    made up after the fact: a word predicted with the label of its first letter most often
    holds most of the mass."""
    [result] = head.predict(FOX)
    right = [w for w in result["words"] if w["label"] == w["word"][0].lower()]
    assert len(right) >= 6
    assert np.mean([w["probability"] for w in right]) > 1 / len(head.label_names)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True])
def test_top_k_is_checked(head, top_k):
    with pytest.raises(pipeline.PipelineError, match="top_k"):
        head.predict("the sea", top_k=top_k)
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        result = CliRunner().invoke(main, ["predict", str(head.path), "x", "--top-k",
                                           str(top_k)])
        assert result.exit_code == 1 and result.output.startswith("Error: Invalid value for '--top-k'")
