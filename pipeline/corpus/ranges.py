"""Corpus files as byte ranges, read in order a bounded piece at a time, as Hadoop and Spark
split text files.

Range k of a file starts at the first cut at or after byte k x range_bytes: right after an LF
(text, one example per line), or right after the first line of ASCII whitespace at or after
it (CoNLL / CoNLL-U, whose sentences end at blank lines). So ranges depend only on the file's
bytes and range_bytes, an example never spans two ranges, and a process locates its own
ranges by reading a few bytes at each end, never the ranges before them. A range can be
empty (one line longer than range_bytes covers the next nominal start). A file in an
encoding where an LF byte may be part of a character (UTF-16, UTF-32, EBCDIC, stateful
codecs) is one range.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from pipeline.corpus.examples import CorpusError

CHUNK = 1 << 16  # bytes read at a time while looking for a cut
STATEFUL = ("utf7", "iso2022", "hz")


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, stop) of input file `file_index` (a split), the `nominal`-th range of
    that file and the `index`-th of all files' ranges, in corpus order."""

    path: str
    file_index: int
    index: int
    nominal: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def ascii_compatible(encoding: str) -> bool:
    """Whether LF and CR bytes in a file of this encoding are always line breaks."""
    name = codecs.lookup(encoding).name
    plain = name.replace("-", "").replace("_", "")
    if plain.startswith(("utf16", "utf32")) or any(s in plain for s in STATEFUL):
        return False
    try:
        return "\r\n a".encode(name) == b"\r\n a"
    except (UnicodeError, LookupError, TypeError):
        return False


def file_size(path: str) -> int:
    p = Path(path)
    if p.is_dir():
        raise CorpusError(f"{path}: is a directory, expected a corpus file")
    try:
        return p.stat().st_size
    except FileNotFoundError:
        raise CorpusError(f"{path}: corpus file not found") from None


def nominal_ranges(size: int, range_bytes: int, encoding: str) -> int:
    """How many ranges a file of `size` bytes is cut into (at least one)."""
    return max(1, -(-size // range_bytes)) if ascii_compatible(encoding) else 1


def find_cut(f, position: int, size: int, after_blank: bool) -> int:
    """The first cut at or after `position` in the open file `f`: just after an LF, or with
    `after_blank` just after an LF-ended line of ASCII whitespace only; `size` if none."""
    if position <= 0 or position >= size:
        return min(max(position, 0), size)
    f.seek(position - 1)
    offset = position - 1  # file offset of the chunk's first byte
    line_start, blank = None, True  # the current line, once the first LF is passed
    while chunk := f.read(CHUNK):
        at = 0
        while True:
            lf = chunk.find(b"\n", at)
            if line_start is not None and chunk[at:len(chunk) if lf < 0 else lf].strip():
                blank = False
            if lf < 0:
                break
            end = offset + lf + 1
            if not after_blank or (line_start is not None and blank):
                return end
            line_start, blank, at = end, True, lf + 1
        offset += len(chunk)
    return size


def locate(path: str, file_index: int, first_index: int, nominal: int, size: int,
           range_bytes: int, count: int, after_blank: bool) -> ByteRange:
    """Range `nominal` (of `count`) of a file, its ends found by reading around them."""
    with open(path, "rb") as f:
        start = find_cut(f, nominal * range_bytes, size, after_blank) if nominal else 0
        stop = (find_cut(f, (nominal + 1) * range_bytes, size, after_blank)
                if nominal + 1 < count else size)
    return ByteRange(path, file_index, first_index + nominal, nominal, start, max(start, stop))


def read_range(r: ByteRange) -> bytes:
    try:
        with open(r.path, "rb") as f:
            f.seek(r.start)
            return f.read(r.size)
    except FileNotFoundError:
        raise CorpusError(f"{r.path}: corpus file not found") from None


def line_breaks(raw: bytes) -> int:
    """Line breaks (LF, CRLF or CR, as split_lines counts them) in bytes of an ASCII-compatible
    encoding: the lines a range holds before the next range's first line."""
    return raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")
