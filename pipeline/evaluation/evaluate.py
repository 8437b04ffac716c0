"""`pipeline evaluate`: score a trained head on a cache made with the same model. The cache
is only read: labels a computed task needs are computed in memory."""

from __future__ import annotations

import numpy as np

from pipeline import tasks
from pipeline.devices import resolve_device
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import (below_lookup_warnings, lookup_by_name, score,
                                         scored_rows)
from pipeline.fingerprint import check_head_fits_cache, check_head_width
from pipeline.store import Cache, CacheError
from pipeline.training.rows import example_rows, row_types, task_labels, word_forms
from pipeline.evaluation.spans import span_metrics
from pipeline.training.decode import decode_words
from pipeline.training.examples import Sequences
from pipeline.training.heads import SavedHead, is_sequence, load_head
from pipeline.training.subword import load_word_features


def evaluate(head_dir: str, cache_dir: str, device: str = "auto",
             split: str | None = None) -> dict:
    """Metrics of the head in `head_dir` on `cache_dir`, with "split" naming what was scored.

    By default a cache embedded with splits is scored on its held-out split (test, else
    dev), any other cache on all its examples; `split` names a split or 'all'. Baselines:
    the training set's majority label and its no-context lookup table, saved with the head.
    A sequence head reads each example's words whole and is scored on words (a subtoken
    task's continuation pieces are left out, as in fit); a BIO task adds span scores.
    """
    head = load_head(head_dir)
    cache = Cache(cache_dir)
    check_head_fits_cache(head.fingerprint, cache.fingerprint, head.layers)
    check_head_width(head.config.in_features, cache.hidden_size, head.layers)
    task, label_names, labels = task_labels(cache, head.task)
    if label_names != head.label_names:
        raise CacheError(f"{cache_dir}: labels of task {task.name!r} differ from the head's "
                         f"({len(label_names)} vs {len(head.label_names)} classes); label this "
                         f"cache with the head's label set")
    word_ids, example_ids = cache.read("word_ids"), cache.read("example_ids")
    name, n_examples, rows_all = choose_split(cache, split, example_ids)
    rows = scored_rows(labels, word_ids, rows_all)
    first = tasks.first_subtokens(word_ids, example_ids)
    if is_sequence(head.config):  # it reads whole examples of words and labels words only
        rows = rows[first[rows]]
        read = Sequences.words_of(rows, word_ids, example_ids).rows
    else:
        read = rows
    features = load_word_features(cache, head.layers, read, head.subword, word_ids, example_ids)
    forms = None
    if head.config.chars:  # the head also reads each word's spelling
        token_forms = word_forms(cache, word_ids, example_ids)
        forms = [token_forms[row] for row in read.tolist()]
    y_read, _ = decode_words(head, features, read, example_ids[read], resolve_device(device),
                             forms)
    y_pred = y_read[np.searchsorted(read, rows)]
    y_true = labels[rows]
    words = task.word_mask(y_true, first[rows])
    metrics = score(y_true, y_pred, words, n_examples,
                    baselines(head, cache, task.level, word_ids, example_ids, rows))
    if spans := span_metrics(label_names, y_true, y_pred, example_ids[rows]):
        metrics["spans"] = spans
    metrics["split"] = name
    if warnings := below_lookup_warnings(metrics):
        metrics["warnings"] = warnings
    return metrics


def choose_split(cache: Cache, split: str | None, example_ids: np.ndarray
                 ) -> tuple[str, int, np.ndarray]:
    """(name, number of examples, token rows) of the split to score."""
    splits = cache.manifest.get("splits") or {}
    if split is None:
        split = "test" if "test" in splits else "dev" if "dev" in splits else "all"
    if split == "all":
        return "all", cache.n_examples, np.arange(cache.n_tokens)
    if split not in splits:
        raise PipelineError(f"{cache.cache_dir}: no split {split!r}; give "
                            f"{', '.join([*splits, 'all'])}")
    chosen = splits[split]
    return split, chosen["n_examples"], example_rows(example_ids, chosen["first_example"],
                                                     chosen["n_examples"])


def baselines(head: SavedHead, cache: Cache, level: str, word_ids: np.ndarray,
              example_ids: np.ndarray, rows: np.ndarray) -> dict:
    """Majority and lookup predictions for `rows`, from the head's training statistics."""
    keys, forms = row_types(cache, level, word_ids, example_ids)
    names = keys[rows] if forms is None else forms[keys[rows]]
    table = dict(zip(head.lookup["types"], head.lookup["labels"]))
    majority = head.majority_label
    return {"majority": (np.full(len(rows), majority, dtype=np.int64), {"label": majority}),
            "lookup": (lookup_by_name(table, names, majority), {"key": head.lookup["key"]})}
