"""A run's shards: which examples each holds, and embedding those not yet on disk.

The corpus is cut into shards of ~shard_tokens tokens in corpus order, so shard boundaries
depend only on the tokenizer: runs resume and split across ranks. A few consecutive shards
at a time (a group, see plan_groups) are embedded together; their examples are sorted by
length and batched under a token budget, so batches carry little padding and repeat shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.embedding.batching import plan_groups, plan_shards
from pipeline.embedding.forward import HostBuffers, embed_examples
from pipeline.embedding.model import LoadedModel
from pipeline.embedding.progress import TokenProgress
from pipeline.embedding.tokens import Encoded
from pipeline.store import BackgroundWriter, CacheWriter, ShardData


@dataclass
class ShardPlan:
    """The tokenized corpus cut into shards ([start, stop) example ranges) and the shards
    into groups (lists of consecutive shard indices)."""

    encoded: list[Encoded]
    texts: list[str]
    lengths: list[int]  # tokens per example
    ranges: list[tuple[int, int]]
    groups: list[list[int]]

    @classmethod
    def build(cls, encoded: list[Encoded], texts: list[str], shard_tokens: int,
              bytes_per_token: int) -> "ShardPlan":
        lengths = [len(e.input_ids) for e in encoded]
        ranges = plan_shards(lengths, shard_tokens)
        return cls(encoded, texts, lengths, ranges,
                   plan_groups(len(ranges), shard_tokens * bytes_per_token))

    def span(self, group: list[int]) -> tuple[int, int]:
        """The [start, stop) examples of a group."""
        return self.ranges[group[0]][0], self.ranges[group[-1]][1]

    def tokens(self, start: int, stop: int) -> int:
        return int(sum(self.lengths[start:stop]))


def shard_data(encoded: list[Encoded], texts: list[str], first_example: int,
               hidden: dict[int, np.ndarray]) -> ShardData:
    """One shard's arrays in corpus order, its hidden states (layer -> (n_tokens, hidden))
    given."""
    lengths = [len(e.input_ids) for e in encoded]
    example_ids = np.repeat(np.arange(first_example, first_example + len(encoded)), lengths)
    return ShardData(
        hidden=hidden,
        input_ids=np.concatenate([e.input_ids for e in encoded]),
        word_ids=np.concatenate([e.word_ids for e in encoded]),
        example_ids=example_ids.astype(np.int32),
        char_spans=np.concatenate([e.char_spans for e in encoded]),
        texts=texts,
    )


def embed_group(lm: LoadedModel, plan: ShardPlan, group: list[int], layers: list[int],
                max_tokens: int, dtype: str, progress: TokenProgress,
                buffers: HostBuffers | None = None) -> dict[int, ShardData]:
    """Run the model over the examples of a group of consecutive shards, batched together, and
    split the states back into the group's shards: index -> its arrays (views of `buffers`
    when given)."""
    start, stop = plan.span(group)
    hidden = embed_examples(lm, plan.encoded[start:stop], layers, max_tokens, dtype, progress,
                            buffers)
    token_starts = np.cumsum([0] + plan.lengths[start:stop])
    shards = {}
    for index in group:
        first, last = plan.ranges[index]
        rows = slice(token_starts[first - start], token_starts[last - start])
        shards[index] = shard_data(plan.encoded[first:last], plan.texts[first:last], first,
                                   {layer: states[rows] for layer, states in hidden.items()})
    return shards


def embed_missing(lm: LoadedModel, plan: ShardPlan, groups: list[list[int]],
                  writer: CacheWriter, layers: list[int], max_tokens: int, dtype: str,
                  show_progress: bool) -> dict:
    """Embed the groups with a shard not complete on disk and write those shards (in a
    background thread while the next group runs). Which shards are complete is decided
    first, so the progress bar and the speed count only the examples embedded now. Returns
    this process's counts: {"tokens", "padded_tokens", "seconds", "reused_shards"}."""
    todo = []  # (group, its missing shards)
    for group in groups:
        missing = [i for i in group if not writer.existing_shard(
            i, plan.ranges[i][0], plan.ranges[i][1] - plan.ranges[i][0],
            plan.tokens(*plan.ranges[i]), layers)]
        if missing:
            todo.append((group, missing))
    reused = sum(len(group) for group in groups) - sum(len(missing) for _, missing in todo)
    bar = TokenProgress(sum(stop - start for start, stop in (plan.span(g) for g, _ in todo)),
                        show_progress and bool(todo))
    # the states of a group land in one of two reused host buffers; write_shards waits for the
    # previous group's writes, so a buffer is free again when its turn comes back
    buffers = HostBuffers(lm.device)
    with BackgroundWriter(writer) as background:
        for group, missing in todo:
            shards = embed_group(lm, plan, group, layers, max_tokens, dtype, bar, buffers)
            background.write_shards([(i, shards[i], plan.ranges[i][0]) for i in missing])
    bar.close()
    return {"tokens": bar.tokens, "padded_tokens": bar.padded_tokens, "seconds": bar.seconds,
            "reused_shards": reused}
