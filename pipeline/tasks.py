"""Label registry: a task turns the stored tokens of a cache into one label per token.

Tasks see only what the cache stores (token strings via the vocabulary, word ids, the
example texts and char spans that give each token's word form), so labels can be computed
or added after the transformer ran. Token-level tasks label subtokens; word-level tasks
label the FIRST subtoken of each word and ignore the rest (IGNORE), unless `label_all`
gives every subtoken its word's label.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.errors import PipelineError

IGNORE = -100  # label of tokens left out of loss and metrics

LETTERS = string.ascii_lowercase  # all 26: the reference alphabet stopped at 'v'
LENGTH_BUCKETS = ("1", "2", "3", "4-5", "6-8", "9+")


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


def word_labels(view: TokenView, per_word: list[int | None], label_all: bool) -> np.ndarray:
    """Spread one label per token's word (None = unlabelled) onto the first subtoken, or onto
    every subtoken with `label_all`; the rest get IGNORE."""
    labels = np.full(len(view.tokens), IGNORE, dtype=np.int16)
    for i, label in enumerate(per_word):
        if label is not None and (label_all or view.first[i]):
            labels[i] = label
    return labels


def _first_letter_labels(view: TokenView, label_all: bool = False) -> np.ndarray:
    """1..26 for a token starting with a..z (any case), 0 otherwise: ##pieces, specials, digits."""
    letter_of = {c: i + 1 for i, c in enumerate(LETTERS)}
    labels = np.array([letter_of.get(token[:1].lower(), 0) for token in view.tokens],
                      dtype=np.int16)
    labels[view.special] = 0
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


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


register(Task(
    name="first_letter",
    label_names=[""] + list(LETTERS),
    description="first letter a-z of each subtoken; '' for ## pieces, punctuation, digits, specials",
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

COMPUTED = sorted(TASKS)  # tasks labelled from the cache alone (`pipeline label --task NAME`)
AT_EMBED = ["first_letter"]  # labelled at the end of every embed; the others on first use


def file_task(name: str, label_names: list[str]) -> Task:
    """A word-level task whose labels came from a CoNLL/CoNLL-U file."""
    return Task(name=name, label_names=label_names, description="word labels from a file",
                level="word")


def get_task(name: str, cache=None) -> Task:
    """A registered task, or one whose labels a cache stores (e.g. upos from CoNLL-U)."""
    if name in TASKS:
        return TASKS[name]
    if cache is not None and cache.has_labels(name):
        return file_task(name, cache.label_names(name))
    known = sorted(set(TASKS) | (set(cache.manifest["tasks"]) if cache is not None else set()))
    raise PipelineError(f"unknown task {name!r}; known tasks: {', '.join(known)}")


def first_subtokens(word_ids: np.ndarray, example_ids: np.ndarray) -> np.ndarray:
    """(n_tokens,) bool: the token starts a word (a new word id, or a new example)."""
    first = np.ones(len(word_ids), dtype=bool)
    first[1:] = (word_ids[1:] != word_ids[:-1]) | (example_ids[1:] != example_ids[:-1])
    return first & (word_ids >= 0)


def token_words(texts: list[str], word_ids: np.ndarray, example_ids: np.ndarray,
                char_spans: np.ndarray) -> list[str | None]:
    """The word form of every token (None for specials): the example text from the start of
    the word's first subtoken to the end of its last one."""
    first = first_subtokens(word_ids, example_ids)
    starts = np.flatnonzero(first)
    # a word's last subtoken is the token before the next word start or special token
    boundaries = np.append(np.flatnonzero(first | (word_ids < 0)), len(word_ids))
    ends = boundaries[np.searchsorted(boundaries, starts, side="right")] - 1
    lo, hi = char_spans[starts, 0].tolist(), char_spans[ends, 1].tolist()
    forms = np.array([None] + [texts[e][a:b] for e, a, b in
                               zip(example_ids[starts].tolist(), lo, hi)], dtype=object)
    owner = np.cumsum(first) * (word_ids >= 0)  # 1-based word of each token, 0 for specials
    return forms[owner].tolist()


def cache_view(cache) -> TokenView:
    """A TokenView over every token of a cache, in corpus order."""
    vocab = cache.vocab()
    input_ids, word_ids = cache.read("input_ids"), cache.read("word_ids")
    example_ids = cache.read("example_ids")
    return TokenView([vocab[i] for i in input_ids.tolist()], word_ids,
                     token_words(cache.texts(), word_ids, example_ids, cache.read("char_spans")),
                     first_subtokens(word_ids, example_ids))


def split_per_shard(cache, labels: np.ndarray) -> list[np.ndarray]:
    bounds = np.cumsum([s["n_tokens"] for s in cache.shards])[:-1]
    return np.split(labels, bounds)


def label_cache(cache, task_name: str, label_all: bool = False,
                view: TokenView | None = None) -> None:
    """Compute a task's labels from a cache's stored tokens and add them to the cache."""
    task = get_task(task_name)
    if task.labels_for is None:
        raise PipelineError(f"task {task_name!r} is not computed from the cache; give its labels "
                            f"with `pipeline label --from FILE`")
    labels = task.labels_for(view or cache_view(cache), label_all)
    cache.write_labels(task.name, task.label_names, split_per_shard(cache, labels),
                       meta={"level": task.level, "label_all": label_all, "source": "computed"})


def word_type_keys(words: list[str | None]) -> np.ndarray:
    """(n_tokens,) int64 code of each token's word form, the type of word-level tasks for the
    lookup baseline and the control task (token-level tasks use the token id)."""
    _, codes = np.unique(np.array(["" if w is None else w for w in words], dtype=object),
                         return_inverse=True)
    return codes.astype(np.int64)


def control_labels(keys: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                   seed: int = 0) -> np.ndarray:
    """Hewitt & Liang (2019) control task: every type gets one fixed random label, drawn from
    the task's label distribution on the training rows; IGNORE rows stay ignored."""
    scored = train_rows[labels[train_rows] != IGNORE]
    values, counts = np.unique(labels[scored], return_counts=True)
    types, inverse = np.unique(keys, return_inverse=True)
    rng = np.random.default_rng(seed)
    per_type = rng.choice(values, size=len(types), p=counts / counts.sum())
    return np.where(labels == IGNORE, IGNORE, per_type[inverse]).astype(labels.dtype)
