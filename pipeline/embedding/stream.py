"""One process's streaming pass: its byte ranges read, parsed and tokenized ahead of the model
in a worker thread, each range cut into shards and groups, embedded, and written behind.

Memory holds at most RANGES_AHEAD tokenized ranges (the one being embedded and the next), the
group's hidden states in two reused host buffers, and the shards being written: it depends
on range_bytes and the group, never on the corpus length (`Held` counts it). Shard
boundaries depend only on the range's tokens and shard_tokens, so a resumed run, or any
number of ranks, cuts and batches every example exactly as one uninterrupted process.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np

from pipeline.corpus.ranges import ByteRange, read_range
from pipeline.corpus.survey import Survey, parse_range
from pipeline.embedding.batching import plan_groups, plan_shards
from pipeline.embedding.errors import ModelError
from pipeline.embedding.forward import HostBuffers, embed_examples
from pipeline.embedding.model import LoadedModel
from pipeline.embedding.progress import TokenProgress
from pipeline.embedding.tokens import Encoded, tokenize
from pipeline.store import BackgroundWriter, CacheWriter, ShardData

RANGE_SHARDS = 100_000  # a shard's index: its range's index x RANGE_SHARDS + its index there
RANGES_AHEAD = 2  # tokenized ranges held at once: the one embedded, the next one
TOKENIZE_CHUNK = 4096  # texts per call of the Rust batch encoder (bounds its own objects)


def range_bytes(shard_tokens: int) -> int:
    """Bytes per range: about two shards of English text (~4 bytes a token), within
    64 KiB-16 MiB, so a range's tokens stay a small bounded window."""
    return min(max(8 * shard_tokens, 1 << 16), 1 << 24)


class Held:
    """Examples and tokens tokenized and not yet done with, and the most held at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.examples = self.tokens = self.peak_examples = self.peak_tokens = 0

    def change(self, examples: int, tokens: int) -> None:
        with self.lock:
            self.examples += examples
            self.tokens += tokens
            self.peak_examples = max(self.peak_examples, self.examples)
            self.peak_tokens = max(self.peak_tokens, self.tokens)


@dataclass
class Tokenized:
    """A range's examples, tokenized: texts (n,), encoded (n,), lengths (n,) tokens each."""

    r: ByteRange
    first_example: int
    texts: list[str]
    encoded: list[Encoded]
    lengths: list[int]


def tokenize_range(lm: LoadedModel, survey: Survey, r: ByteRange, reading: dict,
                   stride: int, truncate: bool) -> Tokenized:
    """Read, parse and tokenize one range, in chunks through the Rust batch encoder."""
    part = parse_range(read_range(r), r, **reading, first_line=survey.first_line[r.index],
                       n_columns=survey.columns[r.file_index])
    encoded = []
    for at in range(0, len(part.texts), TOKENIZE_CHUNK):
        cut = slice(at, at + TOKENIZE_CHUNK)
        encoded += tokenize(lm.tokenizer, part.texts[cut], lm.max_length,
                            part.words[cut] if part.words is not None else None,
                            word_starts=part.word_starts[cut] if part.words is not None else None,
                            stride=stride, truncate=truncate)
    return Tokenized(r, survey.first_example[r.index], part.texts, encoded,
                     [len(e.input_ids) for e in encoded])


class Reader:
    """A worker thread tokenizing the ranges in order, at most RANGES_AHEAD held at once;
    iterate to take them (a worker's error is raised there), `done` after each."""

    def __init__(self, ranges: list[ByteRange], work, held: Held):
        self.slots = threading.Semaphore(RANGES_AHEAD)
        self.out: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.held = held
        self.thread = threading.Thread(target=self._run, args=(ranges, work), daemon=True,
                                       name="embed-tokenizer")
        self.thread.start()

    def _run(self, ranges, work) -> None:
        try:
            for r in ranges:
                while not self.slots.acquire(timeout=0.1):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                item = work(r)
                self.held.change(len(item.lengths), sum(item.lengths))
                self.out.put(item)
            self.out.put(None)
        except BaseException as err:  # handed to the consumer, which raises it
            self.out.put(err)

    def __iter__(self):
        while (item := self.out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            item = None  # not held here while the next range is awaited

    def done(self, item: Tokenized) -> None:
        self.held.change(-len(item.lengths), -sum(item.lengths))
        self.slots.release()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


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


@dataclass
class Pass:
    """What one process's pass needs besides the ranges."""

    lm: LoadedModel
    writer: CacheWriter
    layers: list[int]
    max_tokens: int
    dtype: str
    shard_tokens: int


def embed_range(p: Pass, item: Tokenized, background: BackgroundWriter, buffers: HostBuffers,
                bar: TokenProgress, counts: dict) -> list[int]:
    """Cut a tokenized range into shards and groups; embed the groups with a shard not
    complete on disk and queue those shards for writing. Returns the range's shard indices."""
    local = plan_shards(item.lengths, p.shard_tokens) if item.lengths else []
    if len(local) > RANGE_SHARDS:
        raise ModelError(f"{item.r.path}: {len(local):,} shards in bytes {item.r.start}-"
                         f"{item.r.stop}, more than {RANGE_SHARDS:,}; raise --shard-tokens")
    base = item.r.index * RANGE_SHARDS
    tokens = np.cumsum([0] + item.lengths)
    shard_bytes = p.shard_tokens * len(p.layers) * p.lm.hidden_size * 2
    for group in plan_groups(len(local), shard_bytes):
        missing = [i for i in group if not p.writer.existing_shard(
            base + i, item.first_example + local[i][0], local[i][1] - local[i][0],
            int(tokens[local[i][1]] - tokens[local[i][0]]), p.layers)]
        start, stop = local[group[0]][0], local[group[-1]][1]
        counts["reused_shards"] += len(group) - len(missing)
        if not missing:
            bar.bar.update(stop - start)
            continue
        hidden = embed_examples(p.lm, item.encoded[start:stop], p.layers, p.max_tokens, p.dtype,
                                bar, buffers)
        shards = []
        for i in missing:
            first, last = local[i]
            rows = slice(tokens[first] - tokens[start], tokens[last] - tokens[start])
            shards.append((base + i, shard_data(item.encoded[first:last], item.texts[first:last],
                                                item.first_example + first,
                                                {k: v[rows] for k, v in hidden.items()}),
                           item.first_example + first))
        background.write_shards(shards)
    return [base + i for i in range(len(local))]


def embed_ranges(p: Pass, survey: Survey, ranges: list[ByteRange], reading: dict, stride: int,
                 truncate: bool, show_progress: bool) -> dict:
    """This process's ranges through the model into shards. Returns its counts: tokens and
    padded_tokens embedded now, seconds, reused_shards, its shard indices, and what it read:
    bytes, examples, real_tokens, truncated, windowed, windows, peak_held_{examples,tokens}."""
    held = Held()
    counts = {"reused_shards": 0, "shards": [], "bytes": sum(r.size for r in ranges),
              "examples": 0, "real_tokens": 0, "truncated": 0, "windowed": 0, "windows": 0}
    bar = TokenProgress(sum(survey.infos[r.index].n_examples for r in ranges), show_progress)
    # the states of a group land in one of two reused host buffers; write_shards waits for the
    # previous group's writes, so a buffer is free again when its turn comes back
    buffers = HostBuffers(p.lm.device)
    reader = Reader(ranges, lambda r: tokenize_range(p.lm, survey, r, reading, stride, truncate),
                    held)
    try:
        with BackgroundWriter(p.writer) as background:
            for item in reader:
                counts["shards"] += embed_range(p, item, background, buffers, bar, counts)
                counts["examples"] += len(item.lengths)
                counts["real_tokens"] += sum(item.lengths)
                counts["truncated"] += sum(e.truncated for e in item.encoded)
                counts["windowed"] += sum(e.pieces is not None for e in item.encoded)
                counts["windows"] += sum(len(e.pieces or ()) for e in item.encoded)
                reader.done(item)
                del item
    finally:
        reader.close()
        bar.close()
    return counts | {"tokens": bar.tokens, "padded_tokens": bar.padded_tokens,
                     "seconds": bar.seconds, "peak_held_examples": held.peak_examples,
                     "peak_held_tokens": held.peak_tokens}
