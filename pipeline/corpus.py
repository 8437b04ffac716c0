"""Corpus files -> examples.

An example is one unit the transformer sees at once: a line of a plain-text file.
Reading is strict: undecodable bytes, binary files and empty corpora are errors that
name the file and the place, never a traceback.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError

FORMATS = ("text",)


class CorpusError(PipelineError):
    """A corpus file that cannot be read as asked; the message says where and what to do."""


@dataclass(frozen=True)
class Example:
    """One unit of text; `index` is its position among the kept examples, in corpus order."""

    index: int
    text: str


@dataclass
class Corpus:
    path: str
    format: str
    sha256: str
    examples: list[Example]
    stats: dict = field(default_factory=dict)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def read_text(path: str | Path, encoding: str = "utf-8", keep_blank: bool = False) -> Corpus:
    """Read a plain-text corpus: one example per line."""
    path = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: corpus file not found") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a corpus file") from None
    lines = split_lines(decode_bytes(raw, path, encoding))
    kept = [line for line in lines if keep_blank or line.strip()]
    if not any(line.strip() for line in kept):
        what = "has only blank lines" if lines else "is empty"
        raise CorpusError(f"{path}: corpus {what}; nothing to embed")
    examples = [Example(i, line) for i, line in enumerate(kept)]
    stats = {"lines": len(lines), "blank_lines_skipped": len(lines) - len(kept)}
    return Corpus(path, "text", hashlib.sha256(raw).hexdigest(), examples, stats)


def read_corpus(path: str | Path, format: str = "text", encoding: str = "utf-8",
                keep_blank: bool = False) -> Corpus:
    if format == "text":
        return read_text(path, encoding=encoding, keep_blank=keep_blank)
    raise CorpusError(f"unknown corpus format {format!r}; choose one of {', '.join(FORMATS)}")
