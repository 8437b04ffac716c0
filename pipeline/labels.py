"""Word labels from labelled corpora onto an existing cache, without the transformer.

A cache row gets the label of its word (by stored word id) on the word's first subtoken,
or on every subtoken with `label_all`; special tokens and other subtokens get IGNORE.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline import tasks
from pipeline.corpus import Corpus, CorpusError, concat, read_corpus
from pipeline.store import MAX_LABELS, Cache


def default_task_name(corpus: Corpus) -> str:
    """upos, xpos, deprel, ... for CoNLL-U; `tag` for a CoNLL label column."""
    return corpus.label_column.lower() if corpus.format == "conllu" else "tag"


def word_label_rows(corpus: Corpus, label_names: list[str], word_ids: np.ndarray,
                    example_ids: np.ndarray, first: np.ndarray, label_all: bool) -> np.ndarray:
    """(n_tokens,) int16 label of each cache row from the corpus example's per-word labels."""
    index = {name: i for i, name in enumerate(label_names)}
    flat = np.array([index[label] for e in corpus.examples for label in e.labels], dtype=np.int16)
    offsets = np.cumsum([0] + [len(e.labels) for e in corpus.examples])
    labelled = (word_ids >= 0) & (first | label_all)
    labels = np.full(len(word_ids), tasks.IGNORE, dtype=np.int16)
    rows = np.flatnonzero(labelled)
    labels[rows] = flat[offsets[example_ids[rows]] + word_ids[rows]]
    return labels


def write_corpus_labels(cache: Cache, task_name: str | None, corpus: Corpus,
                        label_all: bool = False) -> str:
    """Store the corpus's word labels as task `task_name` (default: see default_task_name)."""
    name = tasks.check_task_name(task_name or default_task_name(corpus))
    if name in tasks.TASKS:
        raise CorpusError(f"task name {name!r} is taken by a computed task; choose another name")
    label_names = sorted({label for e in corpus.examples for label in e.labels})
    if len(label_names) > MAX_LABELS:
        raise CorpusError(f"{corpus.path}: {len(label_names):,} distinct labels in column "
                          f"{corpus.label_column}, more than the {MAX_LABELS:,} a task can "
                          f"store; is that the right --column?")
    word_ids, example_ids = cache.read("word_ids"), cache.read("example_ids")
    labels = word_label_rows(corpus, label_names, word_ids, example_ids,
                             tasks.first_subtokens(word_ids, example_ids), label_all)
    cache.write_labels(name, label_names, tasks.split_per_shard(cache, labels),
                       meta={"level": "word", "label_all": label_all,
                             "source": f"{corpus.path} ({corpus.format} column "
                                       f"{corpus.label_column})"})
    return name


def check_same_words(parts: list[Corpus], cache: Cache, view: tasks.TokenView,
                     example_ids: np.ndarray) -> None:
    """Refuse labels whose sentences are not the cache's examples, word for word; the error
    names the file and line of the first sentence that differs."""
    n_sentences = sum(len(part.examples) for part in parts)
    if n_sentences != cache.n_examples:
        raise CorpusError(f"{', '.join(p.path for p in parts)}: {n_sentences} sentences, the "
                          f"cache has {cache.n_examples} examples; label a cache made from "
                          f"these files, in the same order")
    located = [(part, e) for part in parts for e in part.examples]
    n_words = np.array([len(e.words) for _, e in located])
    offsets = np.concatenate([[0], np.cumsum(n_words)])
    file_words = np.array([w for _, e in located for w in e.words] + [None], dtype=object)
    starts = np.flatnonzero(view.first)
    word_ids, owner = view.word_ids[starts], example_ids[starts]
    # a word id past the sentence's end points at the sentinel None: a mismatch
    index = np.where(word_ids < n_words[owner], offsets[owner] + word_ids, len(file_words) - 1)
    cached = np.array([view.words[r] for r in starts], dtype=object)
    bad = set(owner[file_words[index] != cached].tolist())
    if cache.fingerprint["corpus"]["format"] != "text":  # pre-split: the same joined text
        texts = cache.texts()
        bad.update(i for i, (_, e) in enumerate(located) if texts[i] != e.text)
    else:
        bad.update(np.flatnonzero(np.bincount(owner, minlength=len(located)) != n_words).tolist())
    if bad:
        i = min(bad)
        part, example = located[i]
        rows = starts[owner == i]
        k = next((j for j, r in enumerate(rows) if j >= len(example.words)
                  or example.words[j] != view.words[r]), min(len(rows), len(example.words)))
        ours = example.words[k] if k < len(example.words) else None
        theirs = view.words[rows[k]] if k < len(rows) else None
        raise CorpusError(
            f"{part.path}: line {example.line}: sentence {example.index + 1} differs from "
            f"cache example {i} (word {k + 1}: {ours!r}, cached {theirs!r}); the file must "
            f"hold the cache's words in the same order")


def infer_format(path: str | Path) -> str:
    return "conllu" if str(path).endswith(".conllu") else "conll"


def label(cache_dir: str, task: str | None, from_files: list[str] | None = None,
          format: str | None = None, column: str | None = None,
          label_all: bool = False) -> dict:
    """Add task `task` to a cache: computed from the stored tokens, or word labels read from
    CoNLL/CoNLL-U files (several files cover the cache's examples in order, e.g. the train,
    dev and test splits it was made from); with files, `task` None names the labels after
    their column (default_task_name). Returns {"task", "n_labels", "n_labelled", "seconds"}.
    """
    started = time.perf_counter()
    if task is not None or not from_files:
        tasks.check_task_name(task)
    cache = Cache(cache_dir)
    if not from_files:
        if task not in tasks.TASKS and cache.has_labels(task):
            raise CorpusError(f"task {task!r} of {cache_dir} holds labels from a file; give "
                              f"--from FILE to replace them")
        tasks.label_cache(cache, task, label_all=label_all)
    else:
        if task in tasks.TASKS:
            raise CorpusError(f"task {task!r} is computed from the cache; drop --from, or name "
                              f"the file's labels differently")
        parts = [read_corpus(path, format=format or infer_format(path), column=column)
                 for path in from_files]
        task = task if task is not None else default_task_name(parts[0])
        word_ids, example_ids = cache.read("word_ids"), cache.read("example_ids")
        words = tasks.token_words(cache.texts(), word_ids, example_ids, cache.read("char_spans"))
        view = tasks.TokenView([], word_ids, words, tasks.first_subtokens(word_ids, example_ids))
        check_same_words(parts, cache, view, example_ids)
        write_corpus_labels(cache, task, concat(parts), label_all)
    labels = cache.read_labels(task)
    return {"task": task, "n_labels": len(cache.label_names(task)),
            "n_labelled": int((labels != tasks.IGNORE).sum()),
            "seconds": round(time.perf_counter() - started, 3)}
