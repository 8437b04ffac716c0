"""Cached hidden states as training features: float16 in memory, float32 one batch at a time."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.store import Cache


class Features:
    """The chosen layers of a cache, one contiguous (n_tokens, hidden) float16 array per layer.

    A batch concatenates the layers of the requested rows: (n_rows, hidden * n_layers) float32.
    """

    def __init__(self, layers: list[int], arrays: list[np.ndarray]):
        self.layers = layers
        self.arrays = arrays
        # torch views of the same memory (no copy): index_select gathers rows several times
        # faster than numpy fancy indexing followed by torch.cat
        self.tensors = [torch.from_numpy(a) for a in arrays]

    @classmethod
    def load(cls, cache: Cache, layers: list[int]) -> "Features":
        cache.check_layers(layers)
        return cls(layers, [cache.read_layer(layer) for layer in layers])

    @property
    def in_features(self) -> int:
        return sum(a.shape[1] for a in self.arrays)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def batch(self, rows: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
        """(len(rows), in_features) float32: row i holds cache row rows[i] of every layer."""
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        device = torch.device(device)
        if device.type != "cpu":
            # float16 crosses the bus (half the bytes); the device converts
            half = torch.cat([t.index_select(0, index) for t in self.tensors], dim=1)
            return half.to(device).float()
        if len(self.tensors) == 1:
            return self.tensors[0].index_select(0, index).float()
        # each layer's rows land converted in their columns: no float16 concatenation first
        out = torch.empty(len(index), self.in_features, dtype=torch.float32)
        column = 0
        for tensor in self.tensors:
            out[:, column:column + tensor.shape[1]] = tensor.index_select(0, index)
            column += tensor.shape[1]
        return out
