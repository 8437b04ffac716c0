"""Label registry: a task turns the stored tokens of a cache into one label per token.

Tasks see only what the cache stores (token strings via the vocabulary, word ids,
special-token flags), so labels can be computed or added after the transformer ran.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.errors import PipelineError

IGNORE = -100  # label of tokens left out of loss and metrics

LETTERS = string.ascii_lowercase  # all 26: the reference alphabet stopped at 'v'


@dataclass(frozen=True)
class TokenView:
    """The per-token facts a task may read, for one shard.

    tokens: n_tokens subtoken strings; word_ids: (n_tokens,) int, -1 for special tokens.
    """

    tokens: list[str]
    word_ids: np.ndarray

    @property
    def special(self) -> np.ndarray:
        return self.word_ids < 0


@dataclass(frozen=True)
class Task:
    name: str
    label_names: list[str]
    description: str
    labels_for: Callable[[TokenView], np.ndarray]
    word_label: Callable[[np.ndarray], np.ndarray]

    def word_mask(self, labels: np.ndarray) -> np.ndarray:
        """Tokens that count for `word_accuracy` given their true labels."""
        return self.word_label(labels)


def _first_letter_labels(view: TokenView) -> np.ndarray:
    """1..26 for a token starting with a..z (any case), 0 otherwise: ##pieces, specials, digits."""
    labels = np.zeros(len(view.tokens), dtype=np.int16)
    for i, token in enumerate(view.tokens):
        first = token[:1].lower()
        if not view.special[i] and first in LETTERS and first:
            labels[i] = LETTERS.index(first) + 1
    return labels


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


register(Task(
    name="first_letter",
    label_names=[""] + list(LETTERS),
    description="first letter a-z of each subtoken; '' for ## pieces, punctuation, digits, specials",
    labels_for=_first_letter_labels,
    word_label=lambda labels: labels > 0,
))


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise PipelineError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


COMPUTED = ["first_letter"]  # tasks labelled from the cache alone, at the end of every embed


def label_cache(cache, task_name: str) -> None:
    """Compute a task's labels from a cache's stored tokens and add them to the cache."""
    task = get_task(task_name)
    vocab = cache.vocab()
    per_shard = []
    for input_ids, word_ids in zip(cache.read_per_shard("input_ids"),
                                   cache.read_per_shard("word_ids")):
        view = TokenView([vocab[i] for i in input_ids], word_ids)
        per_shard.append(task.labels_for(view))
    cache.write_labels(task.name, task.label_names, per_shard)
