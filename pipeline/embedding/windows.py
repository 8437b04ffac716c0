"""Examples longer than the model's maximum: overlapping windows that keep every token once.

The plan takes memory linear in the example's length: each token's best window is found by
a binary search over the window starts, never by scoring every token in every window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Piece:
    """One model pass over (part of) an example.

    input_ids: (piece_len,) the ids fed to the model; rows: (piece_len,) which of the
    example's tokens they are; keep: (piece_len,) bool, the tokens whose stored state
    comes from this pass.
    """

    input_ids: np.ndarray
    rows: np.ndarray
    keep: np.ndarray


def window_starts(n: int, width: int, stride: int) -> np.ndarray:
    """(n_windows,) first content token of each window: `stride` apart, the last one ending
    at the end. Needs n > width."""
    return np.array(list(range(0, n - width, stride)) + [n - width], dtype=np.int64)


def best_windows(starts: np.ndarray, n: int, width: int) -> np.ndarray:
    """(n,) for each content token, the window where it sits farthest from a window edge,
    the first such window on ties.

    In a window starting at s, token i has min(i - s, s + width - 1 - i) tokens of context on
    its poorer side: that rises with s up to s = i - (width - 1) / 2 and falls after it, so
    the best window is the last start before that point or the first start at or after it.
    """
    index = np.arange(n, dtype=np.int64)
    # first start s with 2s >= 2i - (width - 1); integers, so half-way points compare exactly
    after = np.searchsorted(2 * starts, 2 * index - (width - 1), side="left")
    before = np.maximum(after - 1, 0)
    after = np.minimum(after, len(starts) - 1)

    def context(window: np.ndarray) -> np.ndarray:
        s = starts[window]
        inside = (index >= s) & (index < s + width)
        return np.where(inside, np.minimum(index - s, s + width - 1 - index), -1)

    # the earlier window wins ties, as it would scanning the windows in order
    return np.where(context(before) >= context(after), before, after)


def plan_windows(input_ids: np.ndarray, word_ids: np.ndarray, width: int,
                 stride: int) -> list[Piece]:
    """Overlapping passes over an example longer than the model's maximum.

    input_ids, word_ids: (n_tokens,), specials included (word id -1). Each window repeats
    the example's leading and trailing special tokens around `width` content tokens; windows
    start `stride` tokens apart and the last one ends at the end. A token's state comes from
    the window where it sits farthest from a window edge (the most context on its poorer
    side), the first such window on ties; specials come from the first (leading) or last
    (trailing) window. Every token is kept exactly once.
    """
    words = np.flatnonzero(word_ids >= 0)
    lead, stop = int(words[0]), int(words[-1]) + 1
    content = np.arange(lead, stop)
    starts = window_starts(len(content), width, stride)
    best = best_windows(starts, len(content), width)
    pieces = []
    for w, s in enumerate(starts.tolist()):
        rows = np.r_[np.arange(lead), content[s:s + width], np.arange(stop, len(input_ids))]
        keep = np.r_[np.full(lead, w == 0), best[s:s + width] == w,
                     np.full(len(input_ids) - stop, w == len(starts) - 1)]
        pieces.append(Piece(input_ids[rows], rows, keep))
    return pieces
