"""Span metrics of BIO/IOB2 tasks (named entities, chunks): precision, recall and F1 over
whole spans, overall and per entity type, by seqeval (its default, conlleval-compatible
reading: an I- without a B- before it opens a span, B-X then I-Y is two spans).

Inputs are per scored word, in cache order: (n,) int64 truth and predictions and the (n,)
example id of each word; a label index past the label names (the unknown class) reads as O.
"""

from __future__ import annotations

import numpy as np

OUTSIDE = "O"


def is_bio(label_names: list[str]) -> bool:
    """A BIO label set: every label O or B-/I- prefixed, and at least one B- or I- label."""
    spans = [name for name in label_names if name != OUTSIDE]
    return bool(spans) and all(name[:2] in ("B-", "I-") and len(name) > 2 for name in spans)


def sentences(labels: np.ndarray, example_ids: np.ndarray, names: list[str]) -> list[list[str]]:
    """Label names per example, in order, for seqeval."""
    text = np.array(names + [OUTSIDE], dtype=object)[np.minimum(labels, len(names))]
    cuts = np.flatnonzero(example_ids[1:] != example_ids[:-1]) + 1
    return [list(part) for part in np.split(text, cuts)] if len(text) else []


def span_scores(label_names: list[str], y_true: np.ndarray, y_pred: np.ndarray,
                example_ids: np.ndarray) -> dict:
    """{"precision", "recall", "f1", "n_spans", "per_type": {type: {precision, recall, f1,
    support}}}: micro-averaged over spans."""
    from seqeval.metrics import classification_report  # imported when scoring spans only

    truth = sentences(y_true, example_ids, label_names)
    predicted = sentences(y_pred, example_ids, label_names)
    report = classification_report(truth, predicted, output_dict=True, zero_division=0)
    micro = report.pop("micro avg")
    per_type = {name: {"precision": round(float(v["precision"]), 6),
                       "recall": round(float(v["recall"]), 6),
                       "f1": round(float(v["f1-score"]), 6), "support": int(v["support"])}
                for name, v in sorted(report.items()) if not name.endswith(" avg")}
    return {"precision": round(float(micro["precision"]), 6),
            "recall": round(float(micro["recall"]), 6), "f1": round(float(micro["f1-score"]), 6),
            "n_spans": int(micro["support"]), "per_type": per_type}


def span_metrics(label_names: list[str], y_true: np.ndarray, y_pred: np.ndarray,
                 example_ids: np.ndarray, baselines: dict[str, np.ndarray] | None = None
                 ) -> dict | None:
    """Span scores of a BIO task (None for any other label set), with each baseline's span
    precision, recall and F1 under "baselines"."""
    if not is_bio(label_names):
        return None
    result = span_scores(label_names, y_true, y_pred, example_ids)
    if baselines:
        result["baselines"] = {
            name: {k: v for k, v in span_scores(label_names, y_true, pred, example_ids).items()
                   if k in ("precision", "recall", "f1")}
            for name, pred in baselines.items()}
    return result
