"""`Cache`: a finished cache as a notebook user sees it — its splits, its tasks, and its
cached hidden states as word-level numpy features, whole or a shard at a time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import store, tasks
from pipeline.errors import PipelineError

DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class WordFeatures:
    """One row per word. x: (n_words, n_layers * hidden) float32 or float16, the chosen layers
    side by side; labels: (n_words,) int64 label index (-100 where the word has none) or None
    without a task; example_ids, word_ids: (n_words,) int64; words: the word forms."""

    x: np.ndarray
    labels: np.ndarray | None
    label_names: list[str] | None
    example_ids: np.ndarray
    word_ids: np.ndarray
    words: list[str]


def word_rows(word_ids: np.ndarray, example_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of each word's first subtoken, (n_words,), and the word each word token
    belongs to, (n_word_tokens,) as an index into them, for the tokens `word_ids >= 0`."""
    is_word = word_ids >= 0
    first = is_word.copy()
    first[1:] &= (word_ids[1:] != word_ids[:-1]) | (example_ids[1:] != example_ids[:-1])
    owner = np.cumsum(first)[is_word] - 1
    return np.flatnonzero(first), owner


class Cache:
    """A finished cache directory (read only). Checks its manifest on opening; every read
    checks the data against its checksum."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader = store.Cache(self.path)

    def __repr__(self) -> str:
        return (f"Cache({str(self.path)!r}: {self.n_examples:,} examples, {self.n_tokens:,} "
                f"tokens, layers {self.layers}, tasks {sorted(self.tasks)})")

    @property
    def layers(self) -> list[int]:
        return list(self._reader.layers)

    @property
    def n_examples(self) -> int:
        return self._reader.n_examples

    @property
    def n_tokens(self) -> int:
        return self._reader.n_tokens

    @property
    def hidden_size(self) -> int:
        return self._reader.hidden_size

    @property
    def splits(self) -> dict[str, range]:
        """Split name -> the example indices it holds; {} for a cache without splits."""
        splits = self._reader.manifest.get("splits") or {}
        return {name: range(s["first_example"], s["first_example"] + s["n_examples"])
                for name, s in splits.items()}

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Stored tasks -> their label names. Computed tasks (tasks.COMPUTED) work too."""
        return {name: list(meta["label_names"])
                for name, meta in self._reader.manifest["tasks"].items()}

    def info(self) -> dict:
        return store.info(self.path)

    def features(self, layers: str | list[int] = "all", subword: str = "first",
                 split: str | None = None, task: str | None = None,
                 dtype: str = "float32") -> WordFeatures:
        """Word features of every example (or of one split) in memory: see iter_features."""
        parts = list(self.iter_features(layers, subword, split, task, dtype))
        if not parts:
            raise PipelineError(f"{self.path}: split {split!r} holds no words")
        return WordFeatures(
            np.concatenate([p.x for p in parts]),
            None if task is None else np.concatenate([p.labels for p in parts]),
            parts[0].label_names,
            np.concatenate([p.example_ids for p in parts]),
            np.concatenate([p.word_ids for p in parts]),
            [w for p in parts for w in p.words])

    def iter_features(self, layers: str | list[int] = "all", subword: str = "first",
                      split: str | None = None, task: str | None = None,
                      dtype: str = "float32") -> Iterator[WordFeatures]:
        """Word features a shard at a time, for caches larger than memory. A word's vector is
        its first subtoken's (`subword="first"`) or the mean of its subtokens' ("mean"), for
        each chosen layer ('all', an index or a list), side by side."""
        layer_list = self._layer_list(layers)
        if subword not in ("first", "mean"):
            raise PipelineError(f"subword must be 'first' or 'mean', got {subword!r}")
        if dtype not in DTYPES:
            raise PipelineError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        examples = self._split_range(split)
        label_names, labels = self._labels(task) if task is not None else (None, None)
        start = 0
        for shard in self._reader.shards:
            stop = start + shard["n_tokens"]
            first_example, n = shard["first_example"], shard["n_examples"]
            if first_example + n > examples.start and first_example < examples.stop:
                yield self._shard_features(shard, layer_list, subword, examples,
                                           None if labels is None else labels[start:stop],
                                           label_names, DTYPES[dtype])
            start = stop

    def to_dataset(self, layers: str | list[int] = "all", subword: str = "first",
                   split: str | None = None, task: str | None = None):
        """A Hugging Face `datasets.Dataset`, one row per example: its text, words, labels
        (names, when a task is given) and `layer_<i>` (n_words, hidden) float32 per layer.
        Needs the `datasets` extra."""
        try:
            import datasets
        except ImportError:
            raise PipelineError("to_dataset needs the datasets package: pip install "
                                "'pipeline-latents[datasets]'") from None
        layer_list = self._layer_list(layers)

        def rows():
            for part in self.iter_features(layer_list, subword, split, task):
                width = part.x.shape[1] // len(layer_list)
                for example in np.unique(part.example_ids):
                    mine = np.flatnonzero(part.example_ids == example)
                    row = {"example_id": int(example),
                           "words": [part.words[i] for i in mine]}
                    if part.labels is not None:
                        row["labels"] = [part.label_names[y] if y >= 0 else None
                                         for y in part.labels[mine]]
                    for j, layer in enumerate(layer_list):
                        row[f"layer_{layer}"] = part.x[mine, j * width:(j + 1) * width]
                    yield row
        return datasets.Dataset.from_list(list(rows()))

    def _layer_list(self, layers: str | int | list[int]) -> list[int]:
        if layers in (None, "all"):
            return self.layers
        items = [layers] if isinstance(layers, int) else (
            layers if isinstance(layers, list) else str(layers).split(","))
        try:
            chosen = [int(item) for item in items]
        except (TypeError, ValueError):
            raise PipelineError(f"layers: {layers!r} is not 'all' or layer indices") from None
        missing = [layer for layer in chosen if layer not in self.layers]
        if missing:
            raise PipelineError(f"layers: {missing} not cached; {self.path} has {self.layers}")
        return chosen

    def _split_range(self, split: str | None) -> range:
        if split is None or split == "all":
            return range(0, self.n_examples)
        if split not in self.splits:
            raise PipelineError(f"{self.path}: no split {split!r} (splits: "
                                f"{', '.join(self.splits) or 'none'})")
        return self.splits[split]

    def _labels(self, task: str) -> tuple[list[str], np.ndarray]:
        if task in self.tasks:
            return self.tasks[task], self._reader.read_labels(task).astype(np.int64)
        names, labels = tasks.compute_labels(self._reader, task)
        return list(names), np.asarray(labels, dtype=np.int64)

    def _shard_features(self, shard: dict, layer_list: list[int], subword: str,
                        examples: range, labels: np.ndarray | None,
                        label_names: list[str] | None, dtype) -> WordFeatures:
        word_ids = self._reader.read_shard_array(shard, "word_ids").astype(np.int64)
        example_ids = self._reader.read_shard_array(shard, "example_ids").astype(np.int64)
        spans = self._reader.read_shard_array(shard, "char_spans")
        texts = self._reader.read_shard_texts(shard)
        first, owner = word_rows(word_ids, example_ids)
        keep = (example_ids[first] >= examples.start) & (example_ids[first] < examples.stop)
        columns = []
        for hidden in self._reader.read_shard_layers(shard, layer_list):
            if subword == "first":
                columns.append(hidden[first].astype(np.float32))
            else:
                sums = np.zeros((len(first), hidden.shape[1]), dtype=np.float32)
                np.add.at(sums, owner, hidden[word_ids >= 0].astype(np.float32))
                columns.append(sums / np.bincount(owner, minlength=len(first))[:, None])
        x = np.concatenate(columns, axis=1)[keep].astype(dtype, copy=False)
        ends = _word_ends(word_ids, first)
        words = [texts[example_ids[a] - shard["first_example"]][spans[a, 0]:spans[b, 1]]
                 for a, b in zip(first[keep], ends[keep])]
        return WordFeatures(x, None if labels is None else labels[first][keep], label_names,
                            example_ids[first][keep], word_ids[first][keep], words)


def _word_ends(word_ids: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Token row of each word's last subtoken: the row before the next word start or special."""
    boundaries = np.append(np.flatnonzero(np.isin(np.arange(len(word_ids)), first)
                                          | (word_ids < 0)), len(word_ids))
    return boundaries[np.searchsorted(boundaries, first, side="right")] - 1
