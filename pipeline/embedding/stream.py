"""One process's streaming pass: its byte ranges read, parsed and tokenized ahead of the model
in a worker thread and handed on in parts, each range cut into shards and groups, embedded,
and written behind.

A group runs as soon as its shards are final: the cut is greedy, so a shard is final once
an example after it is tokenized, and the first shard is written long before its range is
tokenized whole. Memory holds at most RANGES_AHEAD tokenized ranges (the one being embedded
and the next), the hidden states of WRITES_AHEAD + 1 groups in reused host buffers, and the
shards being written: it depends on range_bytes and the group, never on the corpus length
(`Held` counts it). Shard boundaries depend only on the range's tokens and shard_tokens, so
a resumed run, or any number of ranks, cuts and batches every example exactly as one
uninterrupted process.
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
TOKENIZE_CHUNK = 2048  # texts per part: a call of the Rust batch encoder, handed on at once
WRITES_AHEAD = 2  # groups being written while the next is embedded


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
    """A part of a range's examples, tokenized: texts (n,), encoded (n,), lengths (n,) tokens
    each; `first_example` is the part's first; `last` marks the range's last part."""

    r: ByteRange
    first_example: int
    texts: list[str]
    encoded: list[Encoded]
    lengths: list[int]
    last: bool


def tokenize_range(lm: LoadedModel, survey: Survey, r: ByteRange, reading: dict,
                   stride: int, truncate: bool):
    """Read, parse and tokenize one range: yields its parts in order, TOKENIZE_CHUNK texts
    each through the Rust batch encoder (at least one part, the last one marked)."""
    part = parse_range(read_range(r), r, **reading, first_line=survey.first_line[r.index],
                       n_columns=survey.columns[r.file_index])
    first = survey.first_example[r.index]
    n = len(part.texts)
    for at in range(0, max(n, 1), TOKENIZE_CHUNK):
        cut = slice(at, at + TOKENIZE_CHUNK)
        encoded = tokenize(lm.tokenizer, part.texts[cut], lm.max_length,
                           part.words[cut] if part.words is not None else None,
                           word_starts=part.word_starts[cut] if part.words is not None else None,
                           stride=stride, truncate=truncate) if n else []
        yield Tokenized(r, first + at, part.texts[cut], encoded,
                        [len(e.input_ids) for e in encoded], at + TOKENIZE_CHUNK >= n)


class Reader:
    """A worker thread tokenizing the ranges in order, at most RANGES_AHEAD held at once;
    iterate to take their parts (a worker's error is raised there), `done` after each
    range's last part."""

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
                for item in work(r):
                    if self.stop.is_set():
                        return
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
            item = None  # not held here while the next part is awaited

    def done(self, examples: int, tokens: int) -> None:
        """A whole range (its examples and tokens) is done with."""
        self.held.change(-examples, -tokens)
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


@dataclass
class OpenRange:
    """A range's parts taken so far, concatenated, and how many of its groups are done."""

    r: ByteRange
    first_example: int
    texts: list[str]
    encoded: list[Encoded]
    lengths: list[int]
    groups_done: int = 0

    def add(self, part: Tokenized) -> None:
        self.texts += part.texts
        self.encoded += part.encoded
        self.lengths += part.lengths


def embed_ready(p: Pass, item: OpenRange, last: bool, background: BackgroundWriter,
                buffers: HostBuffers, bar: TokenProgress, counts: dict) -> list[int]:
    """Cut the range's examples so far into shards and groups; embed the groups whose shards
    are final (all, once the `last` part is in; else all but the group of the last shard,
    which may still grow) and not complete on disk, and queue those shards for writing.
    Returns the range's shard indices once it is whole, else []."""
    local = plan_shards(item.lengths, p.shard_tokens) if item.lengths else []
    if len(local) > RANGE_SHARDS:
        raise ModelError(f"{item.r.path}: {len(local):,} shards in bytes {item.r.start}-"
                         f"{item.r.stop}, more than {RANGE_SHARDS:,}; raise --shard-tokens")
    base = item.r.index * RANGE_SHARDS
    tokens = np.cumsum([0] + item.lengths)
    shard_bytes = p.shard_tokens * len(p.layers) * p.lm.hidden_size * 2
    # a greedy cut: a shard is final once a later example opened the next one
    final = len(local) if last else len(local) - 1
    for group in plan_groups(len(local), shard_bytes)[item.groups_done:]:
        if group[-1] >= final:
            break
        item.groups_done += 1
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
            first, end = local[i]
            rows = slice(tokens[first] - tokens[start], tokens[end] - tokens[start])
            shards.append((base + i, shard_data(item.encoded[first:end], item.texts[first:end],
                                                item.first_example + first,
                                                {k: v[rows] for k, v in hidden.items()}),
                           item.first_example + first))
        background.write_shards(shards)
    return [base + i for i in range(len(local))] if last else []


def embed_ranges(p: Pass, survey: Survey, ranges: list[ByteRange], reading: dict, stride: int,
                 truncate: bool, show_progress: bool) -> dict:
    """This process's ranges through the model into shards. Returns its counts: tokens and
    padded_tokens embedded now, seconds, reused_shards, its shard indices, and what it read:
    bytes, examples, real_tokens, truncated, windowed, windows, peak_held_{examples,tokens}."""
    held = Held()
    counts = {"reused_shards": 0, "shards": [], "bytes": sum(r.size for r in ranges),
              "examples": 0, "real_tokens": 0, "truncated": 0, "windowed": 0, "windows": 0}
    bar = TokenProgress(sum(survey.infos[r.index].n_examples for r in ranges), show_progress)
    reader = Reader(ranges, lambda r: tokenize_range(p.lm, survey, r, reading, stride, truncate),
                    held)
    # a group's states land in one of WRITES_AHEAD + 1 reused host buffers: write_shards waits
    # until at most WRITES_AHEAD groups are being written, so a buffer is free when its turn
    # comes back
    buffers = HostBuffers(p.lm.device, WRITES_AHEAD + 1)
    item = None
    try:
        with BackgroundWriter(p.writer, ahead=WRITES_AHEAD) as background:
            for part in reader:
                item = item or OpenRange(part.r, part.first_example, [], [], [])
                item.add(part)
                counts["examples"] += len(part.lengths)
                counts["real_tokens"] += sum(part.lengths)
                counts["truncated"] += sum(e.truncated for e in part.encoded)
                counts["windowed"] += sum(e.pieces is not None for e in part.encoded)
                counts["windows"] += sum(len(e.pieces or ()) for e in part.encoded)
                last, part = part.last, None  # not held here while the next part is awaited
                counts["shards"] += embed_ready(p, item, last, background, buffers, bar, counts)
                if last:
                    reader.done(len(item.lengths), sum(item.lengths))
                    item = None
    finally:
        reader.close()
        bar.close()
    return counts | {"tokens": bar.tokens, "padded_tokens": bar.padded_tokens,
                     "seconds": bar.seconds, "peak_held_examples": held.peak_examples,
                     "peak_held_tokens": held.peak_tokens}
