"""What a head trains and is scored on, from one cache and one task: labels, the
train/dev/test rows, and the baselines' training statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline import tasks
from pipeline.evaluation.metrics import (lookup_predict, lookup_table, majority_label,
                                         scored_rows, unknown_labels)
from pipeline.store import Cache, CacheError
from pipeline.training.rows import example_rows, row_types, task_labels


@dataclass
class EvalSplit:
    """Scored rows of one evaluation split with their truth: labels never seen in training
    are mapped to the unknown class (see evaluation.metrics.unknown_labels)."""

    name: str
    rows: np.ndarray  # (n,) cache rows that metrics count
    y: np.ndarray  # (n,) int64 truth
    words: np.ndarray  # (n,) bool: the rows word_accuracy counts
    n_examples: int
    unknown: dict


@dataclass
class TaskData:
    """Everything a head is trained and scored on, from one cache and one task."""

    task: tasks.Task
    label_names: list[str]
    labels: torch.Tensor  # (n_tokens,) int64, IGNORE where not labelled
    train_rows: np.ndarray
    dev: EvalSplit | None  # early stopping watches it; None: fixed epochs
    test: EvalSplit
    majority: int
    lookup: tuple[np.ndarray, np.ndarray]  # lookup_table of the scored training rows
    keys: np.ndarray  # (n_tokens,) int64 type key of each row (token id or word form code)
    type_names: np.ndarray | None  # word forms the keys index; None: keys are token ids
    word_ids: np.ndarray
    example_ids: np.ndarray

    def rows(self) -> np.ndarray:
        """Every row a head trains on or is scored on."""
        return np.concatenate([self.train_rows, self.test.rows]
                              + ([self.dev.rows] if self.dev is not None else []))

    def baselines(self, split: EvalSplit) -> dict:
        """Majority and no-context lookup predictions on a split, for metrics.score."""
        lookup = lookup_predict(self.lookup, self.keys[split.rows], self.majority)
        return {"majority": (np.full_like(split.y, self.majority), {"label": self.majority}),
                "lookup": (lookup, {"key": self.lookup_key()})}

    def lookup_key(self) -> str:
        return "token id" if self.type_names is None else "word form"

    def lookup_record(self) -> dict:
        """The lookup table by type name (token id or word form), so that it applies to any
        cache of the same model: saved with the head as lookup.json."""
        type_keys, type_labels = self.lookup
        types = type_keys if self.type_names is None else self.type_names[type_keys]
        return {"key": self.lookup_key(), "types": types.tolist(),
                "labels": type_labels.tolist()}


def split_rows(example_ids: np.ndarray, n_examples: int,
               val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of the training examples and of the held-out LAST val_fraction of examples."""
    if not 0 < val_fraction < 1:
        raise CacheError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    n_val = max(1, round(n_examples * val_fraction))
    if n_val >= n_examples:
        raise CacheError(f"only {n_examples} examples: nothing left to train on after holding "
                         f"out {n_val}")
    held_out = example_ids >= n_examples - n_val
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def split_examples(cache: Cache, example_ids: np.ndarray, val_fraction: float
                   ) -> tuple[np.ndarray, tuple[str, np.ndarray] | None, tuple[str, np.ndarray]]:
    """Token rows of train, dev (None without one) and test. A cache embedded with --split
    uses its train/dev/test splits (test falls back to dev); otherwise the last
    val_fraction of examples is held out as the test set and there is no dev set."""
    splits = cache.manifest.get("splits")
    if not splits:
        train, held_out = split_rows(example_ids, cache.n_examples, val_fraction)
        return train, None, ("held_out", held_out)
    if "train" not in splits or not ({"dev", "test"} & set(splits)):
        raise CacheError(f"{cache.cache_dir}: splits {', '.join(splits)}; fitting needs a train "
                         f"split and a dev or test split (embed with --split train=PATH ...)")
    rows = {name: example_rows(example_ids, s["first_example"], s["n_examples"])
            for name, s in splits.items()}
    test = "test" if "test" in splits else "dev"
    dev = ("dev", rows["dev"]) if "dev" in splits and test == "test" else None
    return rows["train"], dev, (test, rows[test])


def prepare(cache: Cache, task_name: str, val_fraction: float = 0.1) -> TaskData:
    """Labels, splits, unknown-class mapping and baselines of a task on a cache."""
    task, label_names, labels = task_labels(cache, task_name)
    word_ids, example_ids = cache.read("word_ids"), cache.read("example_ids")
    first = tasks.first_subtokens(word_ids, example_ids)
    train_all, dev, (test_name, test_all) = split_examples(cache, example_ids, val_fraction)
    # only labelled rows train (IGNORE: special tokens, and the continuation pieces of
    # word-level tasks); metrics and baselines also skip special tokens
    train_rows = train_all[labels[train_all] != tasks.IGNORE]
    scored_train = scored_rows(labels, word_ids, train_all)
    if not len(scored_train):
        raise CacheError(f"{cache.cache_dir}: no labelled training tokens for task {task.name!r}")
    seen = np.bincount(labels[scored_train], minlength=len(label_names)) > 0

    def eval_split(name: str, rows_all: np.ndarray) -> EvalSplit:
        rows = scored_rows(labels, word_ids, rows_all)
        y = labels[rows]
        words = task.word_mask(y, first[rows])
        y, unknown = unknown_labels(y, seen, words, label_names)
        return EvalSplit(name, rows, y, words, len(np.unique(example_ids[rows_all])), unknown)

    keys, type_names = row_types(cache, task.level, word_ids, example_ids)
    return TaskData(task, label_names, torch.from_numpy(labels), train_rows,
                    eval_split(*dev) if dev else None, eval_split(test_name, test_all),
                    majority_label(labels[scored_train], len(label_names)),
                    lookup_table(keys[scored_train], labels[scored_train]), keys, type_names,
                    word_ids, example_ids)
