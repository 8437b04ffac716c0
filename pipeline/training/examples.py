"""Whole examples for sequence heads: the word rows of each example, batches of examples
padded to their longest, and a training order that suits how the features are read."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from pipeline import tasks
from pipeline.training.chars import char_table
from pipeline.training.features import FeatureSource

# a training epoch sorts this many batches' worth of shuffled examples by length at a time,
# so that a batch pads little and its examples still differ from epoch to epoch
BUCKET_BATCHES = 32


@dataclass
class Sequences:
    """Examples as runs of rows: example i is rows[starts[i]:starts[i] + lengths[i]], its
    words in order."""

    rows: np.ndarray  # (n_rows,) cache row of each word
    starts: np.ndarray  # (n_examples,) int64
    lengths: np.ndarray  # (n_examples,) int64
    # heads with chars: (n_forms, MAX_CHARS) character ids of each distinct word form, and
    # the (n_rows,) index of each word's form in it (training.chars)
    char_ids: np.ndarray | None = None
    form_of_row: np.ndarray | None = None

    @classmethod
    def from_runs(cls, rows: np.ndarray, row_examples: np.ndarray) -> "Sequences":
        """Consecutive rows with the same example id form one example ((n,) each)."""
        rows = np.asarray(rows, dtype=np.int64)
        change = np.ones(len(rows), dtype=bool)
        change[1:] = row_examples[1:] != row_examples[:-1]
        starts = np.flatnonzero(change)
        return cls(rows, starts, np.diff(np.append(starts, len(rows))))

    @classmethod
    def words_of(cls, rows: np.ndarray, word_ids: np.ndarray,
                 example_ids: np.ndarray) -> "Sequences":
        """Every word row (a word's first subtoken; no special tokens) of the examples that
        `rows` touch, in cache order ((n_tokens,) word_ids and example_ids)."""
        examples = np.unique(example_ids[rows])
        first = tasks.first_subtokens(word_ids, example_ids) & (word_ids >= 0)
        words = np.flatnonzero(first & np.isin(example_ids, examples))
        return cls.from_runs(words, example_ids[words])

    def with_forms(self, forms) -> "Sequences":
        """These examples with the character ids of their words' forms ((n_rows,) strings in
        self.rows order), for heads that read spelling (training.chars)."""
        if len(forms) != len(self.rows):
            raise ValueError(f"{len(self.rows)} words but {len(forms)} word forms")
        return replace(self, **dict(zip(("char_ids", "form_of_row"), char_table(forms))))

    def __len__(self) -> int:
        return len(self.starts)

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Where each of `rows` sits in self.rows (rows built by words_of are sorted)."""
        return np.searchsorted(self.rows, rows)

    def batches(self, order: np.ndarray, budget: int) -> list[np.ndarray]:
        """Examples `order` cut into batches of at most `budget` padded words (examples x
        the longest), at least one example each."""
        out, start = [], 0
        while start < len(order):
            stop, longest = start + 1, self.lengths[order[start]]
            while stop < len(order):
                longest = max(longest, self.lengths[order[stop]])
                if longest * (stop - start + 1) > budget:
                    break
                stop += 1
            out.append(order[start:stop])
            start = stop
        return out

    def epoch_batches(self, features: FeatureSource, budget: int,
                      generator: torch.Generator) -> list[np.ndarray]:
        """One epoch's batches: examples in the features' read-friendly random order (an
        example never spans two shards, so its first row stands for it), sorted by length a
        bucket at a time, the batches shuffled within their bucket (so that streamed features
        keep reading the shards of one buffer at a time)."""
        firsts = self.rows[self.starts]
        order = np.searchsorted(firsts, features.epoch_order(firsts, generator)) \
            if np.all(firsts[1:] > firsts[:-1]) else \
            torch.randperm(len(self), generator=generator).numpy()
        bucket = max(1, BUCKET_BATCHES * budget // max(1, int(self.lengths.mean())))
        batches = []
        for start in range(0, len(order), bucket):
            part = order[start:start + bucket]
            sorted_part = self.batches(part[np.argsort(self.lengths[part], kind="stable")],
                                       budget)
            batches += [sorted_part[i] for i in
                        torch.randperm(len(sorted_part), generator=generator).numpy()]
        return batches

    def in_order(self, budget: int) -> list[np.ndarray]:
        """Every example once, batched in order (for scoring)."""
        return self.batches(np.arange(len(self)), budget)

    def gather(self, features: FeatureSource, batch: np.ndarray, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(B, T, in_features) features of a batch of examples padded with zeros, its (B, T)
        bool mask, and the (n,) positions in self.rows of its real words in mask order."""
        lengths = self.lengths[batch]
        positions = np.concatenate([np.arange(s, s + n) for s, n in
                                    zip(self.starts[batch], lengths)])
        flat = features.batch(self.rows[positions], device)
        mask = torch.arange(int(lengths.max()))[None, :] < torch.from_numpy(lengths)[:, None]
        mask = mask.to(flat.device)
        x = flat.new_zeros(len(batch), mask.shape[1], flat.shape[1])
        x[mask] = flat  # boolean indexing fills row-major: the concatenation order
        return x, mask, positions

    def gather_chars(self, positions: np.ndarray, mask: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A gathered batch's words as character ids ((U, MAX_CHARS), one row per distinct
        form) and the (B, T) int64 index of each word's form in them (0 at padding); None
        without chars."""
        if self.char_ids is None:
            return None
        forms, index = np.unique(self.form_of_row[positions], return_inverse=True)
        padded = torch.zeros(mask.shape, dtype=torch.int64, device=mask.device)
        padded[mask] = torch.from_numpy(index.reshape(-1)).to(mask.device)
        return torch.from_numpy(self.char_ids[forms]).to(mask.device), padded
