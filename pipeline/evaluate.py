"""Metrics of a head over cached examples, and the command that scores a head on another cache."""

from __future__ import annotations

import numpy as np
import torch

from pipeline import tasks
from pipeline.devices import resolve_device
from pipeline.features import Features
from pipeline.heads import SavedHead, load_head
from pipeline.store import Cache, CacheError, same_model


def predict_rows(head: SavedHead | torch.nn.Module, features: Features, rows: np.ndarray,
                 batch_size: int = 16384, device: str = "cpu") -> np.ndarray:
    """Argmax label of each row in `rows` (token indices into the cache)."""
    module = head.module if isinstance(head, SavedHead) else head
    preds = np.empty(len(rows), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            preds[start:start + len(batch)] = module(features.batch(batch, device)).argmax(-1).cpu()
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


def accuracies(task: tasks.Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """token_accuracy over all scored tokens, word_accuracy over the task's word tokens."""
    words = task.word_mask(y_true)
    return {
        "token_accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "word_accuracy": float(np.mean(y_true[words] == y_pred[words])) if words.any() else 0.0,
    }


def score(task: tasks.Task, y_true: np.ndarray, y_pred: np.ndarray, majority_label: int,
          n_examples: int) -> dict:
    """The metrics file's content for scored tokens (specials and ignored tokens already removed)."""
    return {
        **accuracies(task, y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "n_examples": int(n_examples),
        "n_tokens": int(len(y_true)),
        "n_words": int(task.word_mask(y_true).sum()),
        "baselines": {
            "majority": {"label": int(majority_label),
                         **accuracies(task, y_true, np.full_like(y_true, majority_label))},
        },
    }


def scored_rows(labels: np.ndarray, word_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows of `rows` that metrics count: not special tokens, not ignored labels."""
    keep = (word_ids[rows] >= 0) & (labels[rows] != tasks.IGNORE)
    return rows[keep]


def evaluate(head_dir: str, cache_dir: str, device: str = "auto") -> dict:
    """Score a trained head on every example of another cache made with the same model."""
    head = load_head(head_dir)
    cache = Cache(cache_dir)
    check_compatible(head.fingerprint, cache.fingerprint, head.layers)
    task = tasks.get_task(head.task)
    if not cache.has_labels(task.name):
        tasks.label_cache(cache, task.name)
    labels = cache.read_labels(task.name)
    rows = scored_rows(labels, cache.read("word_ids"), np.arange(cache.n_tokens))
    features = Features.load(cache, head.layers)
    y_pred = predict_rows(head, features, rows, device=resolve_device(device))
    return score(task, labels[rows].astype(np.int64), y_pred, head.majority_label,
                 cache.n_examples)


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
