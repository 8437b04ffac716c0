"""Text -> token ids with word ids and char spans, long examples planned as windows."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import numpy as np

from pipeline.embedding.errors import ModelError
from pipeline.embedding.windows import Piece, plan_windows


@dataclass
class Encoded:
    """One tokenized example: arrays of n_tokens rows, specials included.

    input_ids: (n_tokens,) int32; word_ids: (n_tokens,) int32, -1 for specials;
    char_spans: (n_tokens, 2) int32 [start, end) in the example's text. `pieces` is None
    when the example fits the model in one pass, else its overlapping windows
    (see pipeline.embedding.windows).
    """

    input_ids: np.ndarray
    word_ids: np.ndarray
    char_spans: np.ndarray
    truncated: bool
    pieces: list[Piece] | None = None

    def passes(self) -> list[Piece]:
        if self.pieces is not None:
            return self.pieces
        rows = np.arange(len(self.input_ids))
        return [Piece(self.input_ids, rows, np.ones(len(rows), dtype=bool))]


def window_width(tokenizer, max_length: int) -> int:
    """Content tokens per window: the model's maximum less the special tokens it adds."""
    return max_length - tokenizer.num_special_tokens_to_add()


def check_stride(stride: int | None, width: int) -> int:
    """The window step: `stride` if it leaves no gap between windows, half a window if None."""
    if stride is None:
        return max(1, width // 2)
    if not 1 <= stride <= width:
        raise ModelError(f"--stride {stride} out of range: windows hold {width} tokens of this "
                         f"model, give a stride from 1 to {width}")
    return stride


def word_offsets(words: Sequence[str], starts: Sequence[int] | None) -> np.ndarray:
    """(n_words,) char offset of each word in its example's text: `starts` as given, else
    the words taken as joined by single spaces."""
    if starts is not None:
        return np.asarray(starts, dtype=np.int32)
    return np.cumsum([0] + [len(w) + 1 for w in words[:-1]], dtype=np.int32)


def flat_arrays(encodings) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rust encodings -> per encoding (ids (n,) int32, word ids (n,) int32 with -1 for
    specials, char spans (n, 2) int32): the values of all of them go through numpy at once,
    as per-encoding conversions cost more than the Rust encoding itself."""
    if not encodings:
        return []
    counts = [len(e) for e in encodings]
    total = sum(counts)
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int32, total)
    word_ids = np.fromiter(chain.from_iterable(e.word_ids for e in encodings), object, total)
    word_ids = np.where(np.equal(word_ids, None), -1, word_ids).astype(np.int32)
    spans = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in encodings)),
                        np.int32, 2 * total).reshape(-1, 2)
    cuts = np.cumsum(counts)[:-1]
    return list(zip(np.split(ids, cuts), np.split(word_ids, cuts), np.split(spans, cuts)))


def tokenize(tokenizer, texts: list[str], max_length: int,
             words: list[tuple[str, ...]] | None = None, *,
             word_starts: list[Sequence[int] | None] | None = None, stride: int | None = None,
             truncate: bool = False) -> list[Encoded]:
    """Tokenize with offsets and word ids. An example longer than max_length keeps all its
    tokens and is run as overlapping windows `stride` content tokens apart (default: half a
    window); with `truncate` it keeps only its first max_length-1 tokens + the last special.

    With `words` (pre-split examples) the tokenizer gets the words as given, word ids index
    them, and char spans point into the example's text: each word starts at its offset in
    `word_starts` (per example; None, or None for an example, means the text is the words
    joined by single spaces).
    """
    width = window_width(tokenizer, max_length)
    stride = check_stride(stride, width)
    # the Rust tokenizer itself: transformers' wrapper converts every encoding into Python
    # lists first; it too switches these off when asked for no truncation
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    encodings = backend.encode_batch([list(w) for w in words] if words is not None else texts,
                                     is_pretokenized=words is not None, add_special_tokens=True)
    out = []
    for i, (ids, word_ids, spans) in enumerate(flat_arrays(encodings)):
        if words is not None and len(words[i]):
            # offsets of pre-split input count from the start of each word
            starts = word_offsets(words[i], word_starts[i] if word_starts is not None else None)
            spans = spans + np.where(word_ids >= 0, starts[np.maximum(word_ids, 0)], 0)[:, None]
        too_long = len(ids) > max_length
        if too_long and truncate:
            keep = np.r_[0:max_length - 1, len(ids) - 1]
            ids, word_ids, spans = ids[keep], word_ids[keep], spans[keep]
        pieces = plan_windows(ids, word_ids, width, stride) if too_long and not truncate else None
        out.append(Encoded(ids, word_ids, spans, too_long and truncate, pieces))
    return out
