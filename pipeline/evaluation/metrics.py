"""Metrics of predicted labels against the truth, and the baselines every metrics file shows.

Inputs are per scored token: (n,) int64 truth and predictions, and an (n,) bool mask of the
rows word_accuracy counts. Labels a training split never had are mapped to the explicit
unknown class len(label_names) before scoring (unknown_labels).
"""

from __future__ import annotations

import numpy as np

from pipeline import tasks

UNKNOWN = "<unk>"  # the class of evaluation labels never seen in training


def accuracies(y_true: np.ndarray, y_pred: np.ndarray, words: np.ndarray) -> dict:
    """token_accuracy over all scored tokens, word_accuracy over the rows `words` marks."""
    return {
        "token_accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "word_accuracy": float(np.mean(y_true[words] == y_pred[words])) if words.any() else 0.0,
    }


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in the truth or the predictions."""
    from sklearn.metrics import f1_score  # imported when scoring: predict never needs it

    if not len(y_true):
        return 0.0
    return float(f1_score(y_true, y_pred, labels=np.union1d(y_true, y_pred), average="macro",
                          zero_division=0))


def per_class(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Precision, recall, F1 and support of every class present in truth or predictions,
    by class name (UNKNOWN for the unknown class)."""
    from sklearn.metrics import precision_recall_fscore_support

    names = list(label_names) + [UNKNOWN]
    classes = np.union1d(y_true, y_pred)
    if not len(classes):
        return {}
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    return {names[c]: {"precision": round(float(p), 4), "recall": round(float(r), 4),
                       "f1": round(float(f), 4), "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support)}


def majority_label(labels: np.ndarray, n_labels: int) -> int:
    """The majority baseline: the most frequent label (the smallest on ties)."""
    return int(np.bincount(labels, minlength=n_labels).argmax())


def lookup_table(keys: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The no-context baseline's table: each type key (token id or word-form code) with its
    most frequent training label (the smaller label on ties); two sorted int64 arrays."""
    n_labels = int(labels.max()) + 1
    combos, counts = np.unique(keys.astype(np.int64) * n_labels + labels, return_counts=True)
    type_keys, type_labels = combos // n_labels, combos % n_labels
    order = np.lexsort((type_labels, -counts, type_keys))
    best = np.r_[True, type_keys[order][1:] != type_keys[order][:-1]]
    return type_keys[order][best], type_labels[order][best]


def lookup_predict(table: tuple[np.ndarray, np.ndarray], keys: np.ndarray,
                   default: int) -> np.ndarray:
    """The table's label for each key; `default` (the majority label) for unseen types."""
    type_keys, type_labels = table
    if not len(type_keys):
        return np.full(len(keys), default, dtype=np.int64)
    pos = np.searchsorted(type_keys, keys).clip(max=len(type_keys) - 1)
    return np.where(type_keys[pos] == keys, type_labels[pos], default)


def lookup_by_name(table: dict, names: np.ndarray, default: int) -> np.ndarray:
    """The lookup baseline on another cache: `table` maps a type (token id or word form) to
    its label; `names` is each row's type, (n,) int or object array; unseen types get
    `default`."""
    types, inverse = np.unique(names, return_inverse=True)
    per_type = np.array([table.get(t, default) for t in types.tolist()], dtype=np.int64)
    return per_type[inverse] if len(types) else np.full(len(names), default, dtype=np.int64)


def score(y_true: np.ndarray, y_pred: np.ndarray, words: np.ndarray, n_examples: int,
          baselines: dict[str, tuple[np.ndarray, dict]]) -> dict:
    """The metrics file's content for scored tokens (specials and ignored tokens already
    removed); `baselines` maps a name to its predictions and extra fields to report."""
    return {
        **accuracies(y_true, y_pred, words),
        "macro_f1": macro_f1(y_true, y_pred),
        "n_examples": int(n_examples),
        "n_tokens": int(len(y_true)),
        "n_words": int(words.sum()),
        "baselines": {name: {**extra, **accuracies(y_true, pred, words)}
                      for name, (pred, extra) in baselines.items()},
    }


def below_lookup_warnings(metrics: dict) -> list[str]:
    """One line when the head's word accuracy is below the no-context lookup baseline's:
    context then did not help, or training went wrong."""
    lookup = metrics.get("baselines", {}).get("lookup")
    if lookup is None or metrics["word_accuracy"] >= lookup["word_accuracy"]:
        return []
    return [f"word accuracy {metrics['word_accuracy']:.4f} is below the no-context lookup "
            f"baseline's {lookup['word_accuracy']:.4f}: the head does worse than each word's "
            f"most frequent training label; try more epochs, another --lr or other --layers"]


def unknown_labels(y_true: np.ndarray, seen: np.ndarray, words: np.ndarray,
                   label_names: list[str]) -> tuple[np.ndarray, dict]:
    """Map truth labels the training rows never had (`seen` is False) to the explicit unknown
    class len(label_names), which no head predicts; report how many there were."""
    unseen = ~seen[y_true]
    names, counts = np.unique(y_true[unseen], return_counts=True)
    report = {"class": UNKNOWN, "n_tokens": int(unseen.sum()),
              "n_words": int((unseen & words).sum()),
              "labels": {label_names[n]: int(c) for n, c in zip(names, counts)}}
    return np.where(unseen, len(label_names), y_true), report


def scored_rows(labels: np.ndarray, word_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of `rows` that metrics count: not special tokens, not ignored labels."""
    keep = (word_ids[rows] >= 0) & (labels[rows] != tasks.IGNORE)
    return rows[keep]
