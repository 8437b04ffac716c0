"""Cached hidden states as training features: the FeatureSource protocol every source follows,
and Features, the source that holds the chosen layers in memory at 2 bytes a value.

The cache stores float16. In memory the layers stay float16, except on CPUs that multiply
bfloat16 natively (AVX512-BF16, AMX): there they are held as bfloat16 (the same bytes; exact
for caches embedded in bf16) so that a batch goes to the head's bf16 matmuls without a
conversion pass. `heads.head_logits` runs a head on either kind of batch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from pipeline.devices import copy_converted, cpu_supports_bf16
from pipeline.store import Cache


class FeatureSource(Protocol):
    """What training and scoring read features through, wherever they live (memory, shards
    streamed from disk, pooled per word). Rows are cache token indices."""

    @property
    def in_features(self) -> int:
        """Width of a batch row: hidden size times the number of layers."""

    @property
    def nbytes(self) -> int:
        """Bytes of the features this source reads from."""

    def batch(self, rows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        """(len(rows), in_features) features of `rows`, bfloat16 or float32 (see to_batch)."""

    def epoch_order(self, rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
        """`rows` in one epoch's training order: a permutation that suits how they are read."""


def hold_dtype() -> torch.dtype:
    """The dtype features are held in on this machine's CPU."""
    return torch.bfloat16 if cpu_supports_bf16() else torch.float16


def to_batch(rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Gathered (n, in_features) rows as the head takes them: bfloat16 rows stay as they are
    on the CPU; float16 (CPU matmuls in fp16 are slow) and anything sent to a GPU (half the
    bytes cross the bus, the device converts) become float32."""
    if device.type == "cpu" and rows.dtype == torch.bfloat16:
        return rows
    if device.type == "cuda":  # from page-locked memory the copy runs asynchronously
        return rows.pin_memory().to(device, non_blocking=True).float()
    return rows.to(device).float()


def shuffle(rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """A full random permutation of `rows`: the epoch order of features held in memory."""
    return rows[torch.randperm(len(rows), generator=generator).numpy()]


class Features:
    """The chosen layers of a cache, one contiguous (n_tokens, hidden) 2-byte tensor per layer:
    hold_dtype() when loaded for training, float16 as given otherwise (no copy). A batch
    concatenates the layers of the requested rows: (n_rows, hidden * n_layers), bfloat16 or
    float32 (see to_batch)."""

    def __init__(self, layers: list[int], arrays: list[np.ndarray | torch.Tensor]):
        self.layers = layers
        self.tensors = [torch.as_tensor(a) for a in arrays]

    @classmethod
    def load(cls, cache: Cache, layers: list[int]) -> "Features":
        """Read the layers shard by shard into their tensors: peak memory is the features
        plus one shard's layer, whatever dtype they are held in."""
        cache.check_layers(layers)
        tensors = [torch.empty(cache.n_tokens, cache.hidden_size, dtype=hold_dtype())
                   for _ in layers]
        # one reused read buffer: fresh arrays per shard and layer cost a page fault every 4 KB
        staging = np.empty((max(s["n_tokens"] for s in cache.shards), cache.hidden_size),
                           dtype=np.float16)
        start = 0
        for shard in cache.shards:
            stop = start + shard["n_tokens"]
            for tensor, array in zip(tensors, cache.iter_shard_layers(shard, layers, staging)):
                copy_converted(tensor[start:stop], torch.from_numpy(array))
            start = stop
        return cls(layers, tensors)

    @property
    def in_features(self) -> int:
        return sum(t.shape[1] for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def epoch_order(self, rows: np.ndarray, generator: torch.Generator) -> np.ndarray:
        return shuffle(rows, generator)

    def batch(self, rows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        """(len(rows), in_features): row i holds cache row rows[i] of every layer."""
        # index_select gathers rows several times faster than numpy fancy indexing
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        device = torch.device(device)
        if len(self.tensors) == 1:
            return to_batch(self.tensors[0].index_select(0, index), device)
        if device.type != "cpu":
            return to_batch(torch.cat([t.index_select(0, index) for t in self.tensors], dim=1),
                            device)
        # each layer's rows land (converted) in their columns: no concatenation first
        held = self.tensors[0].dtype
        out = torch.empty(len(index), self.in_features,
                          dtype=held if held == torch.bfloat16 else torch.float32)
        column = 0
        for tensor in self.tensors:
            out[:, column:column + tensor.shape[1]] = tensor.index_select(0, index)
            column += tensor.shape[1]
        return out
