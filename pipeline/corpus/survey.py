"""A corpus read range by range: each range parsed on its own (Part), a first pass that only
counts (RangeInfo), and the counts of all ranges put together (Survey).

The first pass gives what the shards need before any range is tokenized: each range's first
global example and first line, the corpus digest, the splits' example ranges. Each process
surveys only its own ranges; the infos are small and are exchanged between processes.
Strict reading is kept: a range that does not parse is parsed again once its first line is
known, so its error names the file's true line; the first bad range in corpus order wins.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pipeline.corpus.columns import (CONLLU_COLUMNS, conll_column, conll_sentences,
                                     conllu_column, conllu_sentences)
from pipeline.corpus.examples import CorpusError
from pipeline.corpus.ranges import ByteRange, line_breaks, read_range
from pipeline.corpus.text import decode_bytes, empty_text_error, split_lines, text_examples
from pipeline.store.layout import MAX_LABELS


@dataclass
class Part:
    """One range's examples in order: texts, and for pre-split formats words (tuples), each
    word's char offset in its text, and one label per word. `stats` counts lines or words."""

    texts: list[str]
    words: list[tuple[str, ...]] | None = None
    word_starts: list[tuple[int, ...] | None] | None = None
    labels: list[tuple[str, ...]] | None = None
    stats: dict = field(default_factory=dict)
    columns: int = 0  # CoNLL: the column count of the range's word lines


def parse_range(raw: bytes, r: ByteRange, format: str, encoding: str = "utf-8",
                keep_blank: bool = False, column: str | int | None = None,
                first_line: int = 1, n_columns: int = 0) -> Part:
    """The examples of a range's bytes; `first_line` is the file line it starts at."""
    lines = split_lines(decode_bytes(raw, r.path, encoding, first_line, r.start))
    if format == "text":
        kept, stats = text_examples(lines, keep_blank)
        return Part(kept, stats=stats)
    if format == "conllu":
        sentences, from_words = conllu_sentences(r.path, lines, column, first_line)
        stats = {"texts_from_words": from_words}
    elif format == "conll":
        sentences, n_columns = conll_sentences(r.path, lines, column, first_line, n_columns)
        stats = {}
    else:
        raise CorpusError(f"unknown corpus format {format!r}; choose one of text, conllu, conll")
    stats = {"sentences": len(sentences), "words": sum(len(s[2]) for s in sentences), **stats}
    return Part([s[0] for s in sentences], [tuple(s[2]) for s in sentences],
                [s[1] for s in sentences], [tuple(s[3]) for s in sentences], stats, n_columns)


@dataclass
class RangeInfo:
    """What the first pass keeps of a range: its place, digest, line breaks and counts."""

    index: int
    file_index: int
    size: int
    sha256: str
    breaks: int
    n_examples: int = 0
    stats: dict = field(default_factory=dict)
    labels: frozenset = frozenset()
    longest: int = 0  # UTF-8 bytes of its longest example
    columns: int = 0
    failed: bool = False


def survey_range(r: ByteRange, reading: dict) -> RangeInfo:
    """Read and parse one range, keeping only its counts (`reading`: format, encoding,
    keep_blank, column). A range that does not parse is marked failed, for `raise_error`."""
    raw = read_range(r)
    info = RangeInfo(r.index, r.file_index, r.size, hashlib.sha256(raw).hexdigest(),
                     line_breaks(raw))
    try:
        part = parse_range(raw, r, **reading)
    except CorpusError:
        info.failed = True
        return info
    info.n_examples, info.stats, info.columns = len(part.texts), part.stats, part.columns
    info.longest = max((len(t.encode()) for t in part.texts), default=0)
    if part.labels is not None:
        info.labels = frozenset(label for labels in part.labels for label in labels)
    return info


@dataclass
class Survey:
    """All ranges' counts put together, in corpus order."""

    infos: list[RangeInfo]
    paths: list[str]
    first_example: list[int]  # per range: its first global example
    first_line: list[int]  # per range: the line it starts at in its file
    columns: list[int]  # per file: CoNLL column count (0: none or not CoNLL)

    @property
    def n_examples(self) -> int:
        return sum(i.n_examples for i in self.infos)

    @property
    def digest(self) -> str:
        """sha256 over every range's sha256: the corpus's identity, computed without any
        process reading all of it."""
        return hashlib.sha256("".join(f"{i.index} {i.file_index} {i.sha256}\n"
                                      for i in self.infos).encode()).hexdigest()

    @property
    def longest(self) -> int:
        return max((i.longest for i in self.infos), default=0)

    def stats(self) -> dict:
        keys = dict.fromkeys(k for i in self.infos for k in i.stats if k != "nonblank")
        return {k: sum(i.stats.get(k, 0) for i in self.infos) for k in keys}

    def split_ranges(self, names: list[str]) -> dict:
        out, first = {}, 0
        for f, (name, path) in enumerate(zip(names, self.paths)):
            n = sum(i.n_examples for i in self.infos if i.file_index == f)
            out[name] = {"path": path, "first_example": first, "n_examples": n}
            first += n
        return out

    def first_failure(self) -> RangeInfo | None:
        """The first range, in corpus order, that did not parse (a CoNLL range whose column
        count differs from its file's first is one)."""
        return next((i for i in self.infos if i.failed or i.columns not in
                     (0, self.columns[i.file_index])), None)


def combine(infos: list[RangeInfo], paths: list[str], format: str,
            column: str | int | None) -> Survey:
    """Put the ranges' counts together; an empty file or too many labels is a CorpusError."""
    infos = sorted(infos, key=lambda i: i.index)
    first_example, first_line, n, line, file = [], [], 0, 1, -1
    for i in infos:
        if i.file_index != file:
            file, line = i.file_index, 1
        first_example.append(n)
        first_line.append(line)
        n, line = n + i.n_examples, line + i.breaks
    columns = [next((i.columns for i in infos if i.file_index == f and i.columns), 0)
               for f in range(len(paths))]
    survey = Survey(infos, paths, first_example, first_line, columns)
    if survey.first_failure() is not None:
        return survey  # the caller raises that range's error first
    for f, path in enumerate(paths):
        mine = [i for i in infos if i.file_index == f]
        if format == "text" and not sum(i.stats.get("nonblank", 0) for i in mine):
            raise empty_text_error(path, sum(i.stats.get("lines", 0) for i in mine))
        if format != "text" and not sum(i.n_examples for i in mine):
            raise CorpusError(f"{path}: no sentences found; nothing to embed")
    if format != "text":
        distinct = len(frozenset().union(*(i.labels for i in infos)))
        if distinct > MAX_LABELS:
            name = (CONLLU_COLUMNS[conllu_column(column)] if format == "conllu"
                    else str(conll_column(column)))
            raise CorpusError(f"{','.join(paths)}: {distinct:,} distinct labels in column "
                              f"{name}, more than the {MAX_LABELS:,} a task can store; is that "
                              f"the right --column?")
    return survey


def raise_error(survey: Survey, r: ByteRange, reading: dict) -> None:
    """Parse the failed range `r` again, its first line now known, to raise its error."""
    parse_range(read_range(r), r, **reading, first_line=survey.first_line[r.index],
                n_columns=survey.columns[r.file_index])
    raise CorpusError(f"{r.path}: bytes {r.start}-{r.stop} did not parse the same way twice; "
                      f"is the file being written to?")
