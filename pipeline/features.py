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
        parts = [torch.from_numpy(a[rows]) for a in self.arrays]
        return torch.cat(parts, dim=1).to(device).float()
