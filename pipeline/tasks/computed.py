"""The tasks computed from a cache alone: each reads a TokenView and returns (n_tokens,) int16
labels, IGNORE (-100) where a token does not count."""

from __future__ import annotations

import string

import numpy as np

from pipeline.tasks.registry import IGNORE, Task, TokenView, register

LETTERS = string.ascii_lowercase  # all 26: the reference alphabet stopped at 'v'
NO_LETTER = "-"  # first_letter's class of tokens that start with no letter a-z: ##pieces, digits
LENGTH_BUCKETS = ("1", "2", "3", "4-5", "6-8", "9+")


def word_labels(view: TokenView, per_word: list[int | None], label_all: bool) -> np.ndarray:
    """Spread one label per token's word (None = unlabelled) onto the first subtoken, or onto
    every subtoken with `label_all`; the rest get IGNORE."""
    labels = np.full(len(view.tokens), IGNORE, dtype=np.int16)
    for i, label in enumerate(per_word):
        if label is not None and (label_all or view.first[i]):
            labels[i] = label
    return labels


def _first_letter_labels(view: TokenView, label_all: bool = False) -> np.ndarray:
    """1..26 for a token starting with a..z (any case), 0 otherwise (##pieces, digits,
    punctuation); special tokens get no label (IGNORE)."""
    letter_of = {c: i + 1 for i, c in enumerate(LETTERS)}
    labels = np.array([letter_of.get(token[:1].lower(), 0) for token in view.tokens],
                      dtype=np.int16)
    labels[view.special] = IGNORE
    return labels


def _word_initial_labels(view: TokenView, label_all: bool = False) -> np.ndarray:
    """1 for a word's first subtoken, 0 for a continuation piece, IGNORE for specials."""
    return np.where(view.special, IGNORE, view.first.astype(np.int16)).astype(np.int16)


def _case_of(word: str) -> int:
    if not word[:1].isalpha():
        return 0
    if word.isupper() and sum(c.isalpha() for c in word) > 1:
        return 3
    return 2 if word[0].isupper() else 1


def _capitalisation_labels(view: TokenView, label_all: bool) -> np.ndarray:
    """Case of the word in the original text (uncased tokenizers lose it): no letter first,
    lower, Capitalised, UPPER."""
    return word_labels(view, [None if w is None else _case_of(w) for w in view.words], label_all)


def _length_bucket(word: str) -> int:
    n = len(word)
    return 0 if n == 1 else 1 if n == 2 else 2 if n == 3 else 3 if n <= 5 else 4 if n <= 8 else 5


def _word_length_labels(view: TokenView, label_all: bool) -> np.ndarray:
    """Length of the word in characters, bucketed: 1, 2, 3, 4-5, 6-8, 9+."""
    return word_labels(view, [None if w is None else _length_bucket(w) for w in view.words],
                       label_all)


register(Task(
    name="first_letter",
    label_names=[NO_LETTER] + list(LETTERS),
    description="first letter a-z of each subtoken; '-' for ## pieces, punctuation and "
                "digits (special tokens are not labelled)",
    level="token",
    labels_for=_first_letter_labels,
    word_rows=lambda labels: labels > 0,
))
register(Task(
    name="word_initial",
    label_names=["continuation", "initial"],
    description="does the subtoken start a word, or continue one (##piece)?",
    level="token",
    labels_for=_word_initial_labels,
))
register(Task(
    name="capitalisation",
    label_names=["none", "lower", "capitalised", "upper"],
    description="case of the word as written in the text: lower, Capitalised, UPPER, or no "
                "letter first",
    level="word",
    labels_for=_capitalisation_labels,
))
register(Task(
    name="word_length",
    label_names=list(LENGTH_BUCKETS),
    description="length of the word in characters, bucketed 1/2/3/4-5/6-8/9+",
    level="word",
    labels_for=_word_length_labels,
))
