"""Metrics of a head over cached examples, and the command that scores a head on another cache."""

from __future__ import annotations

import numpy as np
import torch

from pipeline import tasks
from pipeline.devices import resolve_device
from pipeline.features import Features
from pipeline.heads import SavedHead, head_logits, load_head
from pipeline.store import Cache, CacheError, same_model
from pipeline.subword import word_features


def predict_rows(head: SavedHead | torch.nn.Module, features: Features, rows: np.ndarray,
                 batch_size: int = 16384, device: str = "cpu") -> np.ndarray:
    """Argmax label of each row in `rows` (token indices into the cache)."""
    module = head.module if isinstance(head, SavedHead) else head
    preds = np.empty(len(rows), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            logits = head_logits(module, features.batch(batch, device))
            preds[start:start + len(batch)] = logits.argmax(-1).cpu()
    return preds


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in the truth or the predictions."""
    classes = np.union1d(y_true, y_pred)
    scores = []
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


UNKNOWN = "<unk>"  # the class of evaluation labels never seen in training


def accuracies(y_true: np.ndarray, y_pred: np.ndarray, words: np.ndarray) -> dict:
    """token_accuracy over all scored tokens, word_accuracy over the rows `words` marks."""
    return {
        "token_accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "word_accuracy": float(np.mean(y_true[words] == y_pred[words])) if words.any() else 0.0,
    }


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
    pos = np.searchsorted(type_keys, keys).clip(max=len(type_keys) - 1)
    return np.where(type_keys[pos] == keys, type_labels[pos], default)


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


def per_class(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Precision, recall, F1 and support of every class present in truth or predictions."""
    names = list(label_names) + [UNKNOWN]
    report = {}
    for c in np.union1d(y_true, y_pred):
        tp = int(np.sum((y_pred == c) & (y_true == c)))
        predicted, support = int(np.sum(y_pred == c)), int(np.sum(y_true == c))
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        report[names[c]] = {"precision": round(precision, 4), "recall": round(recall, 4),
                            "f1": round(f1, 4), "support": support}
    return report


def scored_rows(labels: np.ndarray, word_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of `rows` that metrics count: not special tokens, not ignored labels."""
    keep = (word_ids[rows] >= 0) & (labels[rows] != tasks.IGNORE)
    return rows[keep]


def evaluate(head_dir: str, cache_dir: str, device: str = "auto") -> dict:
    """Score a trained head on every example of another cache made with the same model.
    Only the majority baseline is shown: the lookup table stays with the training cache."""
    head = load_head(head_dir)
    cache = Cache(cache_dir)
    check_compatible(head.fingerprint, cache.fingerprint, head.layers)
    if head.task in tasks.TASKS and not cache.has_labels(head.task):
        tasks.label_cache(cache, head.task)
    task = tasks.get_task(head.task, cache)
    if cache.label_names(task.name) != head.label_names:
        raise CacheError(f"{cache_dir}: labels of task {task.name!r} differ from the head's "
                         f"({len(cache.label_names(task.name))} vs {len(head.label_names)} "
                         f"classes); label this cache with the head's label set")
    labels, word_ids = cache.read_labels(task.name), cache.read("word_ids")
    example_ids = cache.read("example_ids")
    rows = scored_rows(labels, word_ids, np.arange(cache.n_tokens))
    features = word_features(Features.load(cache, head.layers), head.subword, word_ids,
                             example_ids)
    y_pred = predict_rows(head, features, rows, device=resolve_device(device))
    y_true = labels[rows].astype(np.int64)
    words = task.word_mask(y_true, tasks.first_subtokens(word_ids, example_ids)[rows])
    majority = np.full_like(y_true, head.majority_label)
    return score(y_true, y_pred, words, cache.n_examples,
                 {"majority": (majority, {"label": head.majority_label})})


def check_compatible(head_fp: dict, cache_fp: dict, layers: list[int]) -> None:
    """A head applies to any cache made by the same model, precision and max length."""
    if not same_model(head_fp["model"], cache_fp["model"]):
        raise CacheError(f"fingerprint mismatch: the head was trained on features of model "
                         f"{head_fp['model']['name']!r}, this cache holds {cache_fp['model']['name']!r}"
                         f" (weights, config or vocabulary differ)")
    for key in ("storage_dtype", "compute_dtype", "max_length"):
        if head_fp[key] != cache_fp[key]:
            raise CacheError(f"fingerprint mismatch: head trained with {key}={head_fp[key]}, "
                             f"this cache has {key}={cache_fp[key]}")
    missing = [layer for layer in layers if layer not in cache_fp["layers"]]
    if missing:
        raise CacheError(f"the head reads layer(s) {missing}, which this cache does not hold "
                         f"(it has {cache_fp['layers']})")
