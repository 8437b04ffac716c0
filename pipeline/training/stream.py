"""Features of a cache larger than memory, streamed shard by shard through a bounded buffer.

Training reads features through a FeatureSource whatever they come from. StreamedFeatures
answers `batch` from a buffer of whole shards (least recently used dropped first), and its
`epoch_order` makes the training order buffer-friendly: shards in a random order, taken a
buffer at a time, the rows of each buffer shuffled together. Held-out rows are read in
corpus order, one shard after the other, so every epoch reads each shard about twice at
most and peak memory stays near the budget whatever the cache size.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import psutil
import torch

from pipeline.devices import converted
from pipeline.errors import PipelineError
from pipeline.training.features import FeatureSource, Features, hold_dtype, to_batch
from pipeline.store import Cache

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
         "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
         "tib": 2**40}
# of the memory budget, the share the shard buffer may fill; the rest covers a training
# batch in float32 and the per-token labels, word ids and example ids fit keeps
BUFFER_SHARE = 0.8


def parse_size(size: str | int) -> int:
    """'1GB' -> 10**9 bytes, '512MiB' -> 2**29; a plain number is bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(size))
    if not match or match.group(2).lower() not in UNITS:
        raise PipelineError(f"bad --max-memory {size!r}: give a size like 1GB, 512MB or 2GiB")
    return int(float(match.group(1)) * UNITS[match.group(2).lower()])


def load_features(cache: Cache, layers: list[int],
                  max_memory: str | int | None = None) -> FeatureSource:
    """Features of `layers`: all in memory when they fit, else streamed from the shards.

    They fit when they take at most `max_memory` bytes; without `max_memory`, when they take
    at most half the memory available now (streaming then gets a quarter of it).
    """
    need = cache.layer_bytes(layers)
    if max_memory is None:
        available = psutil.virtual_memory().available
        if need <= available // 2:
            return Features.load(cache, layers)
        budget = available // 4
    else:
        budget = parse_size(max_memory)
        if need <= budget:
            return Features.load(cache, layers)
    return StreamedFeatures(cache, layers, budget)


class StreamedFeatures:
    """The chosen layers of a cache, read one shard at a time into a buffer of whole shards
    (a FeatureSource).

    `batch(rows)` gives (n_rows, hidden * n_layers) rows like Features.batch, loading
    the shards the rows live in and dropping the least recently used ones beyond the buffer.
    """

    def __init__(self, cache: Cache, layers: list[int], budget: int):
        cache.check_layers(layers)
        self.cache, self.layers = cache, layers
        self.offsets = np.cumsum([0] + [shard["n_tokens"] for shard in cache.shards])
        self.in_features = cache.hidden_size * len(layers)
        largest = max(shard["n_tokens"] for shard in cache.shards) * self.in_features * 2
        self.buffer_shards = int(budget * BUFFER_SHARE) // largest
        if self.buffer_shards < 1:
            raise PipelineError(
                f"--max-memory {budget / 1e6:,.1f} MB cannot hold one shard's features "
                f"({largest / BUFFER_SHARE / 1e6:,.1f} MB needed for layers {layers}); raise "
                f"--max-memory, fit fewer --layers, or embed with a smaller --shard-tokens")
        self.loaded: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self.shard_reads = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the chosen layers over the whole cache (streamed, never all held at once)."""
        return self.cache.layer_bytes(self.layers)

    def _shard(self, index: int) -> list[np.ndarray]:
        if index in self.loaded:
            self.loaded.move_to_end(index)
            return self.loaded[index]
        while len(self.loaded) >= self.buffer_shards:
            self.loaded.popitem(last=False)
        arrays = self.cache.read_shard_layers(self.cache.shards[index], self.layers)
        self.shard_reads += 1
        self.loaded[index] = arrays
        return arrays

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def batch(self, rows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        out = np.empty((len(rows), self.in_features), dtype=np.float16)
        shard_of = self.shard_of(rows)
        for index in np.unique(shard_of):
            where = np.flatnonzero(shard_of == index)
            local = rows[where] - self.offsets[index]
            column = 0
            for array in self._shard(int(index)):
                out[where, column:column + array.shape[1]] = array[local]
                column += array.shape[1]
        return to_batch(converted(torch.from_numpy(out), hold_dtype()), torch.device(device))

    def epoch_order(self, rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """`rows` in training order: shards in random order, `buffer_shards` at a time, the rows
        of each group shuffled together (a shuffle buffer of whole shards)."""
        shard_of = self.shard_of(rows)
        shard_order = torch.randperm(len(self.cache.shards), generator=generator).numpy()
        parts = []
        for start in range(0, len(shard_order), self.buffer_shards):
            group = rows[np.isin(shard_of, shard_order[start:start + self.buffer_shards])]
            parts.append(group[torch.randperm(len(group), generator=generator).numpy()])
        return np.concatenate(parts)

