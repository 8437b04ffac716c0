"""Word features from subtoken features: a word's first subtoken, or the mean of all of them.

Computed at fit (and predict) time from stored word ids, so one cache serves both choices.
"""

from __future__ import annotations

import numpy as np
import psutil
import torch

from pipeline.devices import converted
from pipeline.errors import PipelineError
from pipeline.store import Cache
from pipeline.training.features import FeatureSource, Features, hold_dtype, shuffle
from pipeline.training.stream import load_features, parse_size

SUBWORD_MODES = ("first", "mean")


def word_spans(word_ids: np.ndarray, example_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token, where its word starts and how many subtokens it has: two (n_tokens,) int64
    arrays. A special token is a word of its own."""
    n = len(word_ids)
    starts_word = np.ones(n, dtype=bool)
    starts_word[1:] = ((word_ids[1:] != word_ids[:-1]) | (example_ids[1:] != example_ids[:-1])
                       | (word_ids[1:] < 0))
    heads = np.flatnonzero(starts_word)
    lengths = np.diff(np.append(heads, n))
    owner = np.cumsum(starts_word) - 1
    return heads[owner].astype(np.int64), lengths[owner].astype(np.int64)


class WordMean:
    """Any FeatureSource seen word by word: the batch row for token r is the mean over the
    subtokens of r's word, (n_rows, in_features)."""

    def __init__(self, base: FeatureSource, word_ids: np.ndarray, example_ids: np.ndarray):
        self.base = base
        self.start, self.length = word_spans(word_ids, example_ids)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def nbytes(self) -> int:
        return self.base.nbytes

    def epoch_order(self, rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
        return self.base.epoch_order(rows, generator)  # the base knows how it is read

    def batch(self, rows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        # most words are one subtoken (93% of EWT's), whose mean is its own row: pool the others
        lengths = self.length[rows]
        out = self.base.batch(self.start[rows], device).float()
        several = np.flatnonzero(lengths > 1)
        if len(several):
            out[torch.from_numpy(several).to(out.device)] = self._pooled(rows[several], device)
        return out

    def _pooled(self, rows: np.ndarray, device: str | torch.device) -> torch.Tensor:
        """(len(rows), in_features) float32: the mean over each row's word's subtokens."""
        lengths = self.length[rows]
        owner = np.repeat(np.arange(len(rows)), lengths)
        offsets = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        parts = self.base.batch(self.start[rows][owner] + offsets, device).float()
        sums = torch.zeros(len(rows), parts.shape[1], device=parts.device)
        sums.index_add_(0, torch.from_numpy(owner).to(parts.device), parts)
        return sums / torch.from_numpy(lengths).to(parts.device, parts.dtype)[:, None]


def word_features(features: FeatureSource, mode: str, word_ids: np.ndarray,
                  example_ids: np.ndarray) -> FeatureSource:
    """`features` for `--subword first` (unchanged: labels sit on first subtokens), a WordMean
    for `--subword mean`."""
    if mode == "first":
        return features
    if mode == "mean":
        return WordMean(features, word_ids, example_ids)
    raise PipelineError(f"unknown --subword {mode!r}; choose one of {', '.join(SUBWORD_MODES)}")


class RowFeatures:
    """The features of chosen cache rows only, pooled once before training.

    Word-level tasks score one row per word, so a copy of those rows (each already pooled:
    its own features for `first`, its word's mean for `mean`) is smaller than the cache's
    layers and spares every epoch the pooling. Per layer (n_rows, hidden), held like
    Features; `batch` takes cache row indices like Features.batch.
    """

    def __init__(self, features: Features, position: np.ndarray):
        self.features = features
        self.position = position  # (n_tokens,) cache row -> row of `features`, -1 if absent

    @classmethod
    def from_cache(cls, cache: Cache, layers: list[int], rows: np.ndarray, mode: str,
                   word_ids: np.ndarray, example_ids: np.ndarray) -> "RowFeatures":
        """Read one layer at a time, so peak memory is the copy plus one layer."""
        rows = np.unique(rows)
        position = np.full(cache.n_tokens, -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        arrays = []
        for layer in layers:
            full = cache.read_layer(layer)
            if mode == "mean":
                pooled = WordMean(Features([layer], [full]), word_ids, example_ids)
                arrays.append(torch.cat([converted(pooled.batch(rows[i:i + 65536]), hold_dtype())
                                         for i in range(0, len(rows), 65536)]))
            else:
                arrays.append(converted(torch.from_numpy(full[rows]), hold_dtype()))
            del full
        return cls(Features(layers, arrays), position)

    @property
    def in_features(self) -> int:
        return self.features.in_features

    @property
    def nbytes(self) -> int:
        return self.features.nbytes

    def epoch_order(self, rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
        return shuffle(rows, generator)

    def batch(self, rows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        return self.features.batch(self.position[rows], device)


def load_word_features(cache: Cache, layers: list[int], rows: np.ndarray, mode: str,
                       word_ids: np.ndarray, example_ids: np.ndarray,
                       max_memory: str | int | None = None) -> FeatureSource:
    """Features for training and scoring `rows` with `--subword mode`: a pooled copy of just
    those rows (RowFeatures) when it pools or leaves out rows and fits the memory budget
    (`max_memory`, else half the available memory), otherwise the cache's layers in memory
    or streamed (training.stream), pooled per batch."""
    if mode not in SUBWORD_MODES:
        raise PipelineError(f"unknown --subword {mode!r}; choose one of {', '.join(SUBWORD_MODES)}")
    n_rows = len(np.unique(rows))
    need = n_rows * cache.hidden_size * len(layers) * 2
    budget = (parse_size(max_memory) if max_memory is not None
              else psutil.virtual_memory().available // 2)
    # a copy of nearly every row saves neither memory nor time unless it pools once
    worth_it = mode == "mean" or n_rows <= 0.9 * cache.n_tokens
    if worth_it and need <= budget:
        cache.check_layers(layers)
        return RowFeatures.from_cache(cache, layers, rows, mode, word_ids, example_ids)
    return word_features(load_features(cache, layers, max_memory), mode, word_ids, example_ids)
