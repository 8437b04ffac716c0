"""`embed()`: a corpus through the frozen model into a shard cache, streaming, resumable and
torchrun-aware.

Steps: check the settings; cut the input files into byte ranges and share them between the
ranks; survey this rank's ranges (digest, counts, strict parsing) and exchange the counts;
load and prepare the model; stream this rank's ranges through it into shards
(pipeline.embedding.stream); on rank 0 write the manifest and call `on_finished`. Embed
knows no task: labels are added by the caller through `on_finished`.
"""

from __future__ import annotations

import time
from typing import Callable

from pipeline.corpus import CorpusError
from pipeline.corpus.ranges import ByteRange, file_size, locate, nominal_ranges
from pipeline.corpus.survey import Survey, combine, raise_error, survey_range
from pipeline.embedding import distributed
from pipeline.embedding.checks import parse_layers
from pipeline.embedding.model import (cast_model, drop_blocks_above, load_model,
                                  resolve_dtype)
from pipeline.embedding.stream import Pass, embed_ranges, range_bytes
from pipeline.embedding.tokens import check_stride, window_width
from pipeline.settings import EmbedSettings
from pipeline.store import FORMAT_VERSION, Cache, CacheWriter


def input_files(corpus_path: str | None, splits: dict[str, str] | None) -> list[str]:
    """The files read, in order: the corpus, or the split files in the order given."""
    if corpus_path is not None and splits:
        raise CorpusError("give either a corpus file or --split NAME=PATH, not both")
    if splits:
        return [str(path) for path in splits.values()]
    if corpus_path is None:
        raise CorpusError("no corpus given: pass a corpus file or --split NAME=PATH")
    return [str(corpus_path)]


def my_ranges(files: list[str], nbytes: int, reading: dict,
              ranks: distributed.Ranks) -> tuple[int, list[ByteRange]]:
    """All files' range count, and this rank's ranges located (their ends found)."""
    sizes = [file_size(path) for path in files]
    counts = [nominal_ranges(size, nbytes, reading["encoding"]) for size in sizes]
    units = [(f, k, sum(counts[:f])) for f in range(len(files)) for k in range(counts[f])]
    share = distributed.share(len(units), ranks)
    return len(units), [locate(files[f], f, first, k, sizes[f], nbytes, counts[f],
                               reading["format"] != "text")
                        for f, k, first in units[share.start:share.stop]]


def survey_corpus(files: list[str], nbytes: int, reading: dict,
                  ranks: distributed.Ranks) -> tuple[Survey, list[ByteRange]]:
    """Every range's counts (each rank reading only its own) and this rank's ranges. A corpus
    error stops every rank; the first bad range in corpus order is the one reported."""
    _, mine = distributed.everywhere(ranks, lambda: my_ranges(files, nbytes, reading, ranks))
    infos = distributed.everywhere(ranks, lambda: [survey_range(r, reading) for r in mine])
    infos = [info for part in distributed.gather(ranks, infos) for info in part]
    survey = distributed.everywhere(ranks, lambda: combine(infos, files, reading["format"],
                                                           reading["column"]))
    failed = survey.first_failure()
    if failed is not None:
        bad = next((r for r in mine if r.index == failed.index), None)
        distributed.everywhere(ranks, lambda: raise_error(survey, bad, reading) if bad else None)
        raise CorpusError(f"range {failed.index} of the corpus did not parse")
    return survey, mine


def embed(corpus_path: str | None, out: str, *, splits: dict[str, str] | None = None,
          force: bool = False, progress: bool = True,
          on_finished: Callable[[dict], None] | None = None, **settings) -> dict | None:
    """Embed a corpus into a shard cache at `out`; returns the manifest (None on torchrun
    ranks other than 0). Complete shards of an earlier run with the same inputs are kept, so
    an interrupted run resumes. Examples longer than the model's maximum run as windows
    `stride` tokens apart, or are cut with `truncate`.

    The corpus is read as byte ranges, each with its own shards. Under torchrun
    (RANK/WORLD_SIZE set) every rank reads, tokenizes and embeds only its share of the
    ranges on its own device into the same `out`, and rank 0 writes the manifest once all
    are done, then calls `on_finished(manifest)` (the API adds a labelled corpus's labels
    there).

    `splits` (name -> path, e.g. train/dev/test) puts several files in one cache instead of
    `corpus_path`; the manifest records each split's example range. `settings` are those of
    pipeline.settings.EmbedSettings, all checked before the corpus is read. The manifest
    written holds no timings (a rerun must write the same bytes); the one returned adds them
    under "run".
    """
    s = EmbedSettings.build("", **settings)
    files = input_files(corpus_path, splits)
    reading = {"format": s.format, "encoding": s.encoding, "keep_blank": s.keep_blank,
               "column": s.column}
    nbytes = range_bytes(s.shard_tokens)
    ranks = distributed.from_env()
    distributed.start(ranks)
    try:
        started = time.perf_counter()
        survey, mine = survey_corpus(files, nbytes, reading, ranks)
        survey_seconds = time.perf_counter() - started
        started = time.perf_counter()
        lm = load_model(s.model, device=distributed.rank_device(s.device, ranks),
                        trust_remote_code=s.trust_remote_code)
        load_seconds = time.perf_counter() - started
        layer_list = parse_layers(s.layers, lm.n_hidden_states)
        stride = check_stride(s.stride, window_width(lm.tokenizer, lm.max_length))
        drop_blocks_above(lm, max(layer_list))
        compute_dtype = resolve_dtype(s.dtype, lm.device)
        kernels = cast_model(lm, compute_dtype)
        fingerprint = {
            "format_version": FORMAT_VERSION,
            "model": lm.fingerprint,
            "layers": layer_list,
            "storage_dtype": "float16",
            "compute_dtype": compute_dtype,
            "kernels": kernels,  # values differ in the last bf16 place between kernels
            "max_length": lm.max_length,
            "corpus": {"sha256": survey.digest, "format": s.format, "encoding": s.encoding,
                       "keep_blank": s.keep_blank,
                       # pre-split words carry their sentence's true text (`# text`, SpaceAfter)
                       **({"text": "true"} if s.format != "text" else {})},
            "range_bytes": nbytes,  # shards are cut per byte range
            "shard_tokens": s.shard_tokens,
            # always: whether an example is long is known only once it is tokenized
            "long_inputs": "truncate" if s.truncate else {"stride": stride},
        }
        writer = distributed.on_primary(ranks, lambda: CacheWriter(out, fingerprint,
                                                                   force=force))
        if not ranks.primary:
            writer = CacheWriter(out, fingerprint, primary=False)
        try:
            step = Pass(lm, writer, layer_list, s.max_tokens, compute_dtype, s.shard_tokens)
            done = distributed.gather(ranks, distributed.everywhere(ranks, lambda: embed_ranges(
                step, survey, mine, reading, stride, s.truncate, progress and ranks.primary)))
            timings = {"survey_seconds": round(survey_seconds, 3),
                       "load_seconds": round(load_seconds, 3)}
            manifest = distributed.on_primary(ranks, lambda: finish(
                out, writer, lm, survey, splits, done, s.max_tokens, ranks, timings,
                on_finished))
        finally:
            writer.close()
    finally:
        distributed.stop()
    return manifest


def finish(out: str, writer: CacheWriter, lm, survey: Survey, splits: dict | None,
           done: list[dict], max_tokens: int, ranks: distributed.Ranks, timings: dict,
           on_finished: Callable[[dict], None] | None) -> dict:
    """Rank 0, every rank done: write vocab and manifest, call `on_finished`, and return the
    manifest with this run's timings and counts added in memory."""
    seconds = max(d["seconds"] for d in done)
    embedded = sum(d["tokens"] for d in done)
    run = {"embedded_tokens": embedded, "padded_tokens": sum(d["padded_tokens"] for d in done),
           "reused_shards": sum(d["reused_shards"] for d in done),
           "embed_seconds": round(seconds, 3),
           "tokens_per_second": round(embedded / max(seconds, 1e-9), 1), **timings,
           "peak_held_examples": max(d["peak_held_examples"] for d in done),
           "peak_held_tokens": max(d["peak_held_tokens"] for d in done)}
    per_rank = {f"rank{r}_{key}": d[key] for r, d in enumerate(done)
                for key in ("bytes", "examples", "real_tokens")}
    vocab = lm.tokenizer.convert_ids_to_tokens(list(range(len(lm.tokenizer))))
    shards = sorted(index for d in done for index in d["shards"])
    manifest = writer.finish(shards, vocab, {
        "hidden_size": lm.hidden_size,
        "corpus_path": ",".join(survey.paths),
        **({"splits": survey.split_ranges(list(splits))} if splits else {}),
        "settings": {"max_tokens": max_tokens, "device": str(lm.device),
                     "ranks": ranks.world_size},
        "stats": survey.stats() | {
            "examples": sum(d["examples"] for d in done),
            "truncated_examples": sum(d["truncated"] for d in done),
            "windowed_examples": sum(d["windowed"] for d in done),
            "windows": sum(d["windows"] for d in done),
            "real_tokens": sum(d["real_tokens"] for d in done),
            "ranges": len(survey.infos),
            **per_rank,
        },
    })
    if on_finished is not None:  # finish released the lock: label writers may take it
        on_finished(manifest)
    manifest = Cache(out).manifest
    run["temp_files_removed"] = writer.temp_files_removed
    manifest["run"] = run
    manifest["stats"] = manifest["stats"] | run  # in memory only, for callers
    return manifest
