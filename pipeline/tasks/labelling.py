"""A cache's stored tokens -> a TokenView -> a computed task's labels.

Tasks see only what the cache stores (token strings via the vocabulary, word ids, the
example texts and char spans that give each token's word form), so labels can be computed
or added after the transformer ran. `compute_labels` never writes: fit and evaluate use it
on caches they only read; `label_cache` (`pipeline label`) computes and then stores.
"""

from __future__ import annotations

import numpy as np

from pipeline.tasks.registry import (TASKS, TaskError, TokenView, check_task_name,
                                     no_labels_message)


def first_subtokens(word_ids: np.ndarray, example_ids: np.ndarray) -> np.ndarray:
    """(n_tokens,) bool: the token starts a word (a new word id, or a new example)."""
    first = np.ones(len(word_ids), dtype=bool)
    first[1:] = (word_ids[1:] != word_ids[:-1]) | (example_ids[1:] != example_ids[:-1])
    return first & (word_ids >= 0)


def token_words(texts: list[str], word_ids: np.ndarray, example_ids: np.ndarray,
                char_spans: np.ndarray) -> list[str | None]:
    """The word form of every token (None for specials): the example text from the start of
    the word's first subtoken to the end of its last one. char_spans: (n_tokens, 2)."""
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
    """(n_tokens,) labels -> one (shard n_tokens,) array per shard, in shard order."""
    bounds = np.cumsum([s["n_tokens"] for s in cache.shards])[:-1]
    return np.split(labels, bounds)


def compute_labels(cache, task_name: str, label_all: bool = False,
                   view: TokenView | None = None) -> tuple[list[str], np.ndarray]:
    """A computed task's label names and (n_tokens,) int16 labels on `cache` (IGNORE = -100
    where a token does not count); nothing is written."""
    check_task_name(task_name)
    if task_name not in TASKS:
        if cache.has_labels(task_name):
            raise TaskError(f"task {task_name!r} is not computed from the cache: its labels "
                            f"came from a file and are read from {cache.cache_dir}")
        raise TaskError(no_labels_message(task_name, cache))
    task = TASKS[task_name]
    return list(task.label_names), task.labels_for(view or cache_view(cache), label_all)


def label_cache(cache, task_name: str, label_all: bool = False,
                view: TokenView | None = None) -> None:
    """Compute a task's labels from a cache's stored tokens and add them to the cache."""
    names, labels = compute_labels(cache, task_name, label_all, view)
    cache.write_labels(task_name, names, split_per_shard(cache, labels),
                       meta={"level": TASKS[task_name].level, "label_all": label_all,
                             "source": "computed"})
