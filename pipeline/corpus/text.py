"""Bytes of a corpus file -> lines, strictly: undecodable bytes, binary files and empty corpora
are errors that name the file and the place; and the plain-text format, one example per line."""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path

from pipeline.corpus.examples import Corpus, CorpusError, Example


def read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: corpus file not found") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a corpus file") from None


def decode_bytes(raw: bytes, path: str, encoding: str = "utf-8") -> str:
    """Decode a whole file; a byte-order mark is dropped, bad bytes name line and offset."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise CorpusError(f"{path}: unknown encoding {encoding!r}") from None
    if b"\x00" in raw[:8192] and not encoding.lower().replace("-", "").startswith("utf16"):
        raise CorpusError(f"{path}: looks like a binary file (NUL bytes); expected text")
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig"):
        encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise CorpusError(
            f"{path}: line {line}, byte offset {err.start}: byte 0x{raw[err.start]:02x} "
            f"is not valid {encoding}; pass --encoding (e.g. --encoding cp1252) if the file "
            f"uses another encoding"
        ) from None


def split_lines(text: str) -> list[str]:
    """Split on LF, CRLF or CR, as Python's universal newlines do; no trailing empty line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str, encoding: str = "utf-8") -> tuple[list[str], str]:
    """A file's decoded lines and the sha256 of its bytes."""
    raw = read_bytes(path)
    return split_lines(decode_bytes(raw, path, encoding)), hashlib.sha256(raw).hexdigest()


def read_text(path: str | Path, encoding: str = "utf-8", keep_blank: bool = False) -> Corpus:
    """Read a plain-text corpus: one example per line."""
    path = str(path)
    lines, sha256 = read_lines(path, encoding)
    kept = [line for line in lines if keep_blank or line.strip()]
    if not any(line.strip() for line in kept):
        what = "has only blank lines" if lines else "is empty"
        raise CorpusError(f"{path}: corpus {what}; nothing to embed")
    examples = [Example(i, line) for i, line in enumerate(kept)]
    stats = {"lines": len(lines), "blank_lines_skipped": len(lines) - len(kept)}
    return Corpus(path, "text", sha256, examples, stats)
