"""`embed()`: a corpus through the frozen model into a shard cache, resumable and torchrun-aware.

Steps: check the settings, read the corpus, load and prepare the model, tokenize, plan the
shards, embed this rank's missing shards, and on rank 0 write the manifest and call
`on_finished`. Embed knows no task: labels are added by the caller through `on_finished`.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

from pipeline.corpus import Corpus, CorpusError, read_corpus, read_splits
from pipeline.embedding import distributed
from pipeline.embedding.checks import parse_layers
from pipeline.embedding.model import (DEFAULT_MODEL, cast_model, drop_blocks_above, load_model,
                                  resolve_dtype)
from pipeline.embedding.shards import ShardPlan, embed_missing
from pipeline.embedding.tokens import check_stride, tokenize, window_width
from pipeline.settings import EmbedSettings
from pipeline.store import FORMAT_VERSION, Cache, CacheWriter


def read_input(corpus_path: str | None, splits: dict[str, str] | None,
               **reading) -> tuple[Corpus, dict | None]:
    """The corpus (one file, or named split files read as one) and the splits' example ranges."""
    if corpus_path is not None and splits:
        raise CorpusError("give either a corpus file or --split NAME=PATH, not both")
    if splits:
        return read_splits(splits, **reading)
    return read_corpus(corpus_path, **reading), None


def embed(corpus_path: str | None, out: str, *, splits: dict[str, str] | None = None,
          force: bool = False, progress: bool = True,
          on_finished: Callable[[dict], None] | None = None, **settings) -> dict | None:
    """Embed a corpus into a shard cache at `out`; returns the manifest (None on torchrun
    ranks other than 0). Complete shards of an earlier run with the same inputs are kept, so
    an interrupted run resumes. Examples longer than the model's maximum run as windows
    `stride` tokens apart, or are cut with `truncate`.

    Under torchrun (RANK/WORLD_SIZE set) every rank embeds its share of the shards on its
    own device into the same `out`, and rank 0 writes the manifest once all are done, then
    calls `on_finished(manifest)` (the API adds a labelled corpus's labels there).

    `splits` (name -> path, e.g. train/dev/test) puts several files in one cache instead of
    `corpus_path`; the manifest records each split's example range. `settings` are those of
    pipeline.settings.EmbedSettings, all checked before the corpus is read. The manifest
    written holds no timings (a rerun must write the same bytes); the one returned adds them
    under "run".
    """
    s = EmbedSettings.build("", **settings)
    model, max_tokens, dtype, shard_tokens = s.model, s.max_tokens, s.dtype, s.shard_tokens
    encoding, keep_blank, stride, truncate = s.encoding, s.keep_blank, s.stride, s.truncate
    corpus, split_ranges = read_input(corpus_path, splits, format=s.format, encoding=encoding,
                                      keep_blank=keep_blank, column=s.column)
    ranks = distributed.from_env()
    started = time.perf_counter()
    lm = load_model(model, device=distributed.rank_device(s.device, ranks),
                    trust_remote_code=s.trust_remote_code)
    load_seconds = time.perf_counter() - started
    layer_list = parse_layers(s.layers, lm.n_hidden_states)
    stride = check_stride(stride, window_width(lm.tokenizer, lm.max_length))
    drop_blocks_above(lm, max(layer_list))
    compute_dtype = resolve_dtype(dtype, lm.device)
    kernels = cast_model(lm, compute_dtype)

    texts = [e.text for e in corpus.examples]
    started = time.perf_counter()
    encoded = tokenize(lm.tokenizer, texts, lm.max_length,
                       [e.words for e in corpus.examples] if corpus.presplit else None,
                       word_starts=[getattr(e, "word_starts", None) for e in corpus.examples]
                       if corpus.presplit else None,
                       stride=stride, truncate=truncate)
    tokenize_seconds = time.perf_counter() - started
    n_long = sum(e.truncated or e.pieces is not None for e in encoded)
    fingerprint = {
        "format_version": FORMAT_VERSION,
        "model": lm.fingerprint,
        "layers": layer_list,
        "storage_dtype": "float16",
        "compute_dtype": compute_dtype,
        "kernels": kernels,  # values differ in the last bf16 place between kernels
        "max_length": lm.max_length,
        "corpus": {"sha256": corpus.sha256, "format": corpus.format, "encoding": encoding,
                   "keep_blank": keep_blank,
                   # pre-split words now carry their sentence's true text (`# text`, SpaceAfter)
                   **({"text": "true"} if corpus.presplit else {})},
        "shard_tokens": shard_tokens,
        # how long examples were handled matters only when there are some
        **({"long_inputs": "truncate" if truncate else {"stride": stride}} if n_long else {}),
    }
    plan = ShardPlan.build(encoded, texts, shard_tokens, len(layer_list) * lm.hidden_size * 2)
    mine = [plan.groups[g] for g in distributed.assign_shards(
        [plan.tokens(*plan.span(group)) for group in plan.groups], ranks.world_size)[ranks.rank]]

    distributed.start(ranks, lm.device)
    try:
        writer = distributed.on_primary(ranks, lambda: CacheWriter(out, fingerprint, force=force))
        if not ranks.primary:
            writer = CacheWriter(out, fingerprint, primary=False)
        try:
            done = distributed.gather(ranks, distributed.everywhere(ranks, partial(
                embed_missing, lm, plan, mine, writer, layer_list, max_tokens, compute_dtype,
                progress and ranks.primary)))

            def finish() -> dict:
                seconds = max(d["seconds"] for d in done)
                embedded = sum(d["tokens"] for d in done)
                padded = sum(d["padded_tokens"] for d in done)
                run = {"embedded_tokens": embedded, "padded_tokens": padded,
                       "reused_shards": sum(d.get("reused_shards", 0) for d in done),
                       "embed_seconds": round(seconds, 3),
                       "tokens_per_second": round(embedded / max(seconds, 1e-9), 1),
                       "load_seconds": round(load_seconds, 3),
                       "tokenize_seconds": round(tokenize_seconds, 3)}
                vocab = lm.tokenizer.convert_ids_to_tokens(list(range(len(lm.tokenizer))))
                manifest = writer.finish(len(plan.ranges), vocab, {
                    "hidden_size": lm.hidden_size,
                    "corpus_path": str(corpus.path),
                    **({"splits": split_ranges} if split_ranges else {}),
                    "settings": {"max_tokens": max_tokens, "device": str(lm.device),
                                 "ranks": ranks.world_size},
                    "stats": corpus.stats | {
                        "examples": len(encoded),
                        "truncated_examples": sum(e.truncated for e in encoded),
                        "windowed_examples": sum(e.pieces is not None for e in encoded),
                        "windows": sum(len(e.pieces or ()) for e in encoded),
                        "real_tokens": int(sum(plan.lengths)),
                    },
                })
                if on_finished is not None:  # finish released the lock: label writers may take it
                    on_finished(manifest)
                manifest = Cache(out).manifest
                run["temp_files_removed"] = writer.temp_files_removed
                manifest["run"] = run
                manifest["stats"] = manifest["stats"] | run  # in memory only, for callers
                return manifest

            manifest = distributed.on_primary(ranks, finish)
        finally:
            writer.close()
    finally:
        distributed.stop()
    return manifest
