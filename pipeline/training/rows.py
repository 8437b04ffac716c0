"""Per-row facts of a cache for a task, read and never written: labels (computed in memory
when the cache does not store them), each row's type for the lookup baseline, the rows of a
range of examples, each row's word form. Nothing here depends on evaluation, so that
evaluate can use it."""

from __future__ import annotations

import numpy as np

from pipeline import tasks
from pipeline.store import Cache


def task_labels(cache: Cache, task_name: str) -> tuple[tasks.Task, list[str], np.ndarray]:
    """A task, its label names and its (n_tokens,) int64 labels on `cache`: the stored ones,
    or for a computed task the cache does not store, computed in memory."""
    task = tasks.get_task(task_name, cache)
    if cache.has_labels(task.name):
        return task, cache.label_names(task.name), cache.read_labels(task.name).astype(np.int64)
    labels = task.labels_for(tasks.cache_view(cache), False)
    return task, list(task.label_names), labels.astype(np.int64)


def row_types(cache: Cache, level: str, word_ids: np.ndarray, example_ids: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """The type of every row for the lookup baseline and the control task: (n_tokens,) int64
    keys, the token ids for token-level tasks; for word-level ones codes of the word forms,
    returned beside them as the (n_types,) object array the codes index."""
    if level == "token":
        return cache.read("input_ids").astype(np.int64), None
    words = tasks.token_words(cache.texts(), word_ids, example_ids, cache.read("char_spans"))
    forms, keys = np.unique(np.array(["" if w is None else w for w in words], dtype=object),
                            return_inverse=True)
    return keys.astype(np.int64), forms


def example_rows(example_ids: np.ndarray, first: int, n: int) -> np.ndarray:
    """Token rows of examples first .. first + n - 1."""
    return np.flatnonzero((example_ids >= first) & (example_ids < first + n))


def word_forms(cache: Cache, word_ids: np.ndarray, example_ids: np.ndarray
               ) -> list[str | None]:
    """The (n_tokens,) word form of every cache row (None for special tokens), from the
    cache's (n_tokens,) word and example ids, for heads that read each word's characters."""
    return tasks.token_words(cache.texts(), word_ids, example_ids, cache.read("char_spans"))
