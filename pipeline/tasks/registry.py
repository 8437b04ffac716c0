"""What a task is, the registry of tasks computed from a cache, and finding a task by name.

A task turns the stored tokens of a cache into one label per token. Token-level tasks label
subtokens; word-level tasks label the FIRST subtoken of each word and ignore the rest
(IGNORE), unless `label_all` gives every subtoken its word's label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline import store
from pipeline.errors import PipelineError

IGNORE = -100  # label of tokens left out of loss and metrics


class TaskError(PipelineError):
    """A task name that is malformed, unknown, or has no labels in the cache at hand."""


@dataclass(frozen=True)
class TokenView:
    """The per-token facts a task may read.

    tokens: n_tokens subtoken strings; word_ids: (n_tokens,) int, -1 for special tokens;
    words: n_tokens word forms as written in the example text (None for specials).
    """

    tokens: list[str]
    word_ids: np.ndarray
    words: list[str | None]
    first: np.ndarray  # (n_tokens,) bool: the first subtoken of its word

    @property
    def special(self) -> np.ndarray:
        return self.word_ids < 0


@dataclass(frozen=True)
class Task:
    """`level` says what a type is for the lookup baseline and control task: the token id
    ("token") or the word form ("word")."""

    name: str
    label_names: list[str]
    description: str
    level: str
    labels_for: Callable[[TokenView, bool], np.ndarray] | None = None  # None: labels from a file
    word_rows: Callable[[np.ndarray], np.ndarray] | None = None

    def word_mask(self, labels: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        """Tokens that count for `word_accuracy`: by default the first subtoken of each word."""
        return self.word_rows(labels) if self.word_rows else np.asarray(first, dtype=bool)


TASKS: dict[str, Task] = {}  # tasks computed from the cache alone (`pipeline label --task NAME`)


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def check_task_name(name: str) -> str:
    """`name`, if it may name a task; checked where names enter, by the store's rule (a task
    name is part of a file name: letters, digits, _ . - and at most 64 characters)."""
    store.check_task_name(name)
    return name


def file_task(name: str, label_names: list[str]) -> Task:
    """A word-level task whose labels came from a CoNLL/CoNLL-U file."""
    return Task(name=name, label_names=label_names, description="word labels from a file",
                level="word")


def no_labels_message(name: str, cache=None) -> str:
    """Why `name` is no task here, and how to add its labels from a file."""
    where = "CACHE" if cache is None else str(cache.cache_dir)
    labelled = "" if cache is None else \
        f" (labelled: {', '.join(sorted(cache.manifest['tasks'])) or 'none'})"
    return (f"unknown task {name!r}: {where} has no such labels{labelled}; add word labels "
            f"with `pipeline label {where} --task {name} --from FILE.conllu`, or use a "
            f"computed task: {', '.join(sorted(TASKS))}")


def get_task(name: str, cache=None) -> Task:
    """A registered task, or one whose labels a cache stores (e.g. upos from CoNLL-U)."""
    check_task_name(name)
    if name in TASKS:
        return TASKS[name]
    if cache is not None and cache.has_labels(name):
        return file_task(name, cache.label_names(name))
    raise TaskError(no_labels_message(name, cache))
