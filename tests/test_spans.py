"""Span tasks: BIO label sets are detected, their span precision / recall / F1 are seqeval's
(also on broken and nested-looking spans), and fit and evaluate report them per type."""

import numpy as np
import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from pipeline import api
from pipeline.evaluation import evaluate, is_bio, span_metrics
from pipeline.training import fit

NAMES = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
ENTITIES = {"ishmael": "PER", "ahab": "PER", "nantucket": "LOC", "sea": "LOC"}


def test_bio_label_sets_are_detected():
    assert is_bio(NAMES) and is_bio(["O", "B-X"]) and is_bio(["B-MISC", "I-MISC"])
    assert not is_bio(["NOUN", "VERB"]) and not is_bio(["O"]) and not is_bio(["B-", "O"])
    assert not is_bio(["B-X", "E-X", "O"])


def test_span_scores_match_seqeval_on_broken_and_nested_looking_spans():
    truth = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "I-LOC"],
             ["I-PER", "O", "B-LOC", "B-LOC", "O"],        # I- without B-; two touching spans
             ["B-PER", "I-LOC", "O", "B-PER", "I-PER", "O"]]  # B-X then I-Y: two spans
    pred = [["B-PER", "I-PER", "O", "B-LOC", "I-PER", "I-LOC"],  # a span broken in three
            ["B-PER", "O", "B-LOC", "I-LOC", "O"],         # two spans read as one
            ["I-PER", "I-LOC", "O", "B-PER", "I-PER", "I-PER"]]
    index = {name: i for i, name in enumerate(NAMES)}
    y_true = np.array([index[t] for sent in truth for t in sent])
    y_pred = np.array([index[t] for sent in pred for t in sent])
    example_ids = np.repeat(np.arange(3), [len(s) for s in truth])
    spans = span_metrics(NAMES, y_true, y_pred, example_ids)
    assert spans["precision"] == pytest.approx(precision_score(truth, pred), abs=1e-6)
    assert spans["recall"] == pytest.approx(recall_score(truth, pred), abs=1e-6)
    assert spans["f1"] == pytest.approx(f1_score(truth, pred), abs=1e-6)
    # by hand: truth spans PER(0-1) LOC(3-5) | PER(0) LOC(2) LOC(3) | PER(0) LOC(1) PER(3-4);
    # predicted PER(0-1) LOC(3) PER(4) LOC(5) | PER(0) LOC(2-3) | PER(0) LOC(1) PER(3-5):
    # 9 spans, of which 4 are right
    assert spans["n_spans"] == 8
    assert spans["precision"] == pytest.approx(4 / 9) and spans["recall"] == pytest.approx(4 / 8)
    assert spans["per_type"]["PER"] == {"precision": 0.6, "recall": 0.75,
                                        "f1": pytest.approx(2 / 3, abs=1e-6), "support": 4}
    assert spans["per_type"]["LOC"]["support"] == 4
    assert span_metrics(["NOUN", "VERB"], y_true % 2, y_pred % 2, example_ids) is None
    # the unknown class (a label never seen in training) reads as O
    unknown = np.where(y_true == index["B-LOC"], len(NAMES), y_true)
    assert span_metrics(NAMES, unknown, unknown, example_ids)["precision"] == 1.0


def bio_file(sentences: list[str]) -> str:
    lines = []
    for sentence in sentences:
        previous = None
        for word in sentence.split():
            kind = ENTITIES.get(word)
            tag = "O" if kind is None else ("I-" if previous == kind else "B-") + kind
            lines.append(f"{word} {tag}")
            previous = kind
        lines.append("")
    return "\n".join(lines) + "\n"


def test_a_bio_corpus_gets_span_scores_per_type(tiny_model, tmp_path):
    sentences = ["call me ishmael .", "ahab was in nantucket .", "the sea was white .",
                 "ishmael and ahab was in the sea .", "the white whale is in nantucket sea ."]
    splits = {}
    for name, repeat in (("train", 8), ("dev", 1), ("test", 1)):
        path = tmp_path / f"{name}.conll"
        path.write_text(bio_file(sentences * repeat))
        splits[name] = str(path)
    cache = api.embed(None, tmp_path / "cache", model=tiny_model, format="conll",
                      splits=splits, progress=False)
    assert cache is not None
    for head in ("linear", "bilstm"):
        metrics = fit(str(tmp_path / "cache"), "tag", tmp_path / head, head=head, epochs=30,
                      lr=0.02, hidden=16, dropout=0.0, batch_size=256, device="cpu")
        spans = metrics["spans"]
        assert set(spans["per_type"]) == {"LOC", "PER"} and spans["n_spans"] == 8
        assert 0 <= spans["f1"] <= 1 and "token_accuracy" in metrics
        if head == "bilstm":
            assert set(spans["baselines"]["linear_probe"]) == {"precision", "recall", "f1"}
        again = evaluate(str(tmp_path / head), str(tmp_path / "cache"), device="cpu")
        assert again["spans"]["f1"] == pytest.approx(spans["f1"])
