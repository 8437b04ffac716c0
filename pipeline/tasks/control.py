"""The lookup baseline's and control task's notion of a type, and the control task itself."""

from __future__ import annotations

import numpy as np

from pipeline.tasks.registry import IGNORE


def word_type_keys(words: list[str | None]) -> np.ndarray:
    """(n_tokens,) int64 code of each token's word form, the type of word-level tasks for the
    lookup baseline and the control task (token-level tasks use the token id)."""
    _, codes = np.unique(np.array(["" if w is None else w for w in words], dtype=object),
                         return_inverse=True)
    return codes.astype(np.int64)


def control_labels(keys: np.ndarray, labels: np.ndarray, train_rows: np.ndarray,
                   seed: int = 0) -> np.ndarray:
    """Hewitt & Liang (2019) control task: every type gets one fixed random label, drawn from
    the task's label distribution on the training rows; IGNORE rows stay ignored.
    keys, labels: (n_tokens,); train_rows: row indices."""
    scored = train_rows[labels[train_rows] != IGNORE]
    values, counts = np.unique(labels[scored], return_counts=True)
    types, inverse = np.unique(keys, return_inverse=True)
    rng = np.random.default_rng(seed)
    per_type = rng.choice(values, size=len(types), p=counts / counts.sum())
    return np.where(labels == IGNORE, IGNORE, per_type[inverse]).astype(labels.dtype)
