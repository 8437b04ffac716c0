"""How examples are cut into shards, shards into groups, and groups into padded batches.

Every plan here depends only on the examples' token counts and the settings, never on which
shards exist already, so a resumed run batches every example exactly as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

# float16 hidden states of the shards embedded together (plan_groups): at the default
# shard_tokens a model's shards run one by one, so the first is written early and writes
# follow the model closely; the writer may hold two groups' worth while the next is computed
GROUP_BYTES = 128 << 20


def plan_shards(lengths: list[int], shard_tokens: int) -> list[tuple[int, int]]:
    """Cut examples, in order, into [start, stop) ranges of about shard_tokens tokens each."""
    ranges, start, tokens = [], 0, 0
    for i, length in enumerate(lengths):
        if tokens and tokens + length > shard_tokens:
            ranges.append((start, i))
            start, tokens = i, 0
        tokens += length
    ranges.append((start, len(lengths)))
    return ranges


def plan_groups(n_shards: int, shard_bytes: int) -> list[list[int]]:
    """Consecutive shards embedded together, as many as keep their float16 hidden states
    within GROUP_BYTES (at least one).

    Batches cut from a longer run of length-sorted examples come out full and repeat the same
    shapes, and a shape the process has run before is fast: oneDNN builds its kernels per
    shape.
    """
    size = max(1, GROUP_BYTES // max(1, shard_bytes))
    return [list(range(start, min(start + size, n_shards))) for start in range(0, n_shards, size)]


def token_budget_batches(lengths: list[int], max_tokens: int,
                         max_padding: float = 0.02) -> list[list[int]]:
    """Indices grouped longest first so that batch_size * longest <= max_tokens, and a batch
    is closed early once more than `max_padding` of its tokens would be padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, batch, real = [], [], 0
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        padded = (len(batch) + 1) * longest
        if batch and (padded > max_tokens or real + lengths[i] < (1 - max_padding) * padded):
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    return batches


def pad(encoded: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples or pieces (anything with an `input_ids` array) -> (batch, longest) input ids
    and attention mask."""
    lengths = np.array([len(e.input_ids) for e in encoded])
    # filled in numpy: a torch row assignment costs ~30 us, a numpy one ~1 us
    ids = np.full((len(encoded), lengths.max()), pad_id, dtype=np.int64)
    for row, e in enumerate(encoded):
        ids[row, :len(e.input_ids)] = e.input_ids
    mask = np.arange(ids.shape[1]) < lengths[:, None]
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))
