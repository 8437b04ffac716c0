"""`python -m bench.shapes [CORPUS]`: how much of `pipeline embed`'s forward time goes to batch
shapes the process has not run before.

oneDNN builds (and JIT-compiles) its kernels per matrix shape, and the allocator hands out new
buffer sizes, so the first batch of each (examples, length) shape runs slower than a repeat.
`pipeline embed` batches each shard on its own, so most batches have a shape of their own.
This runs the forward pass as embed does (default model, its dtype, every layer copied off)
and prints tokens/s over the batches whose shape is new and over those seen before, together
with how many distinct shapes the run had. Both groups interleave in time, so drifts in the
machine's speed touch them alike.
"""

from __future__ import annotations

import sys
import time

from bench.suite import MOBY_DICK
from pipeline.settings import EmbedSettings
from pipeline.corpus import read_corpus
from pipeline.embedding import (DEFAULT_MODEL, cast_model, drop_blocks_above, forward_layers,
                            keep_freed_memory, load_model, pad, plan_shards, resolve_dtype,
                            token_budget_batches, tokenize)


def main(argv: list[str]) -> None:
    corpus = argv[0] if argv else str(MOBY_DICK)
    keep_freed_memory()
    lm = load_model(DEFAULT_MODEL, device="cpu")
    layers = list(range(lm.n_hidden_states))
    drop_blocks_above(lm, layers[-1])
    dtype = resolve_dtype(EmbedSettings().dtype, lm.device)
    cast_model(lm, dtype)
    encoded = tokenize(lm.tokenizer, [e.text for e in read_corpus(corpus).examples],
                       lm.max_length)
    lengths = [len(e.input_ids) for e in encoded]
    seen: set[tuple[int, int]] = set()
    totals = {"new": [0.0, 0, 0], "seen before": [0.0, 0, 0]}  # seconds, tokens, batches
    for start, stop in plan_shards(lengths, EmbedSettings().shard_tokens):
        for batch in token_budget_batches(lengths[start:stop], EmbedSettings().max_tokens):
            ids, mask = pad([encoded[start + k] for k in batch], lm.tokenizer.pad_token_id or 0)
            started = time.perf_counter()
            forward_layers(lm, ids, mask, layers, dtype)
            total = totals["seen before" if tuple(ids.shape) in seen else "new"]
            total[0] += time.perf_counter() - started
            total[1] += int(mask.sum())
            total[2] += 1
            seen.add(tuple(ids.shape))
    print(f"{sum(t[2] for t in totals.values())} batches, {len(seen)} distinct shapes")
    for name, (seconds, tokens, batches) in totals.items():
        print(f"{name:>12} shape: {batches:4d} batches, {tokens:8,d} tokens, {seconds:6.1f} s, "
              f"{tokens / max(seconds, 1e-9):8,.0f} tokens/s")


if __name__ == "__main__":
    main(sys.argv[1:])
