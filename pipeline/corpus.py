"""Corpus files -> examples.

An example is one unit the transformer sees at once: a line of a plain-text file, or a
sentence of a CoNLL-U / CoNLL file, whose words arrive pre-split with one label each.
Reading is strict: undecodable bytes, binary files and empty corpora are errors that
name the file and the place, never a traceback.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError

FORMATS = ("text", "conllu", "conll")
CONLLU_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")


class CorpusError(PipelineError):
    """A corpus file that cannot be read as asked; the message says where and what to do."""


@dataclass(frozen=True)
class Example:
    """One unit of text; `index` is its position among the kept examples, in corpus order.

    Labelled formats also give the pre-split `words` (text is them joined by single spaces)
    and one label per word.
    """

    index: int
    text: str
    words: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    line: int = 0  # where a labelled example starts in its file, for error messages


@dataclass
class Corpus:
    path: str
    format: str
    sha256: str
    examples: list[Example]
    stats: dict = field(default_factory=dict)
    label_column: str | None = None  # which column the word labels came from

    @property
    def presplit(self) -> bool:
        return self.format != "text"


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


def read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: corpus file not found") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a corpus file") from None


def read_text(path: str | Path, encoding: str = "utf-8", keep_blank: bool = False) -> Corpus:
    """Read a plain-text corpus: one example per line."""
    path = str(path)
    raw = read_bytes(path)
    lines = split_lines(decode_bytes(raw, path, encoding))
    kept = [line for line in lines if keep_blank or line.strip()]
    if not any(line.strip() for line in kept):
        what = "has only blank lines" if lines else "is empty"
        raise CorpusError(f"{path}: corpus {what}; nothing to embed")
    examples = [Example(i, line) for i, line in enumerate(kept)]
    stats = {"lines": len(lines), "blank_lines_skipped": len(lines) - len(kept)}
    return Corpus(path, "text", hashlib.sha256(raw).hexdigest(), examples, stats)


def conllu_column(column: str | int | None) -> int:
    """A CoNLL-U column by name (UPOS, XPOS, DEPREL, ...) or 0-based index; default UPOS."""
    if column is None:
        return CONLLU_COLUMNS.index("UPOS")
    name = str(column).upper()
    if name in CONLLU_COLUMNS:
        return CONLLU_COLUMNS.index(name)
    if name.lstrip("-").isdigit() and -10 <= int(name) < 10:
        return int(name) % 10
    raise CorpusError(f"unknown CoNLL-U column {column!r}; choose one of "
                      f"{', '.join(CONLLU_COLUMNS)}")


def _sentences(path: str, lines: list[str], parse_line) -> list[tuple[list[str], list[str], int]]:
    """Blank-line separated blocks -> (words, labels, first line number); `parse_line(no, line)`
    returns (word, label) or None for a line that carries no word."""
    sentences, words, labels, first = [], [], [], 0
    for no, line in enumerate(lines + [""], start=1):
        if not line.strip():
            if words:
                sentences.append((words, labels, first))
            words, labels = [], []
            continue
        parsed = parse_line(no, line)
        if parsed is not None:
            if not words:
                first = no
            words.append(parsed[0])
            labels.append(parsed[1])
    return sentences


def read_conllu(path: str | Path, column: str | int | None = None,
                encoding: str = "utf-8") -> Corpus:
    """CoNLL-U: one example per sentence, FORM as words, `column` (default UPOS) as labels.
    Multiword ranges (1-2) and empty nodes (8.1) carry no word of their own and are skipped."""
    path = str(path)
    raw = read_bytes(path)
    index = conllu_column(column)
    sentences, words, labels, first = [], [], [], 0
    # one inline loop: `pipeline label` must stay a small fraction of the embed pass
    for no, line in enumerate(split_lines(decode_bytes(raw, path, encoding)) + [""], start=1):
        if not line or line.isspace():
            if words:
                sentences.append((words, labels, first))
            words, labels = [], []
            continue
        if line[0] == "#":
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise CorpusError(f"{path}: line {no}: expected 10 tab-separated CoNLL-U columns, "
                              f"got {len(cols)}; is this a CoNLL-U file?")
        if not cols[0].isdigit():
            if "-" in cols[0] or "." in cols[0]:
                continue
            raise CorpusError(f"{path}: line {no}: bad word ID {cols[0]!r}")
        if not cols[1]:
            raise CorpusError(f"{path}: line {no}: empty FORM")
        if not words:
            first = no
        words.append(cols[1])
        labels.append(cols[index])
    return _labelled_corpus(path, "conllu", raw, sentences, CONLLU_COLUMNS[index])


def read_conll(path: str | Path, column: str | int | None = None,
               encoding: str = "utf-8") -> Corpus:
    """CoNLL (2003 style): whitespace columns, word first, label in `column` (0-based, default
    the last); a blank line between sentences; -DOCSTART- lines are ignored."""
    path = str(path)
    raw = read_bytes(path)
    try:
        index = -1 if column is None else int(column)
    except ValueError:
        raise CorpusError(f"CoNLL label column must be an index like 3 or -1, got {column!r}") \
            from None
    n_columns = []

    def parse(no: int, line: str):
        cols = line.split()
        if cols[0] == "-DOCSTART-":
            return None
        n_columns.append(len(cols))
        if len(cols) != n_columns[0] or not -len(cols) <= index < len(cols) or len(cols) < 2:
            raise CorpusError(f"{path}: line {no}: {len(cols)} columns, expected {n_columns[0]} "
                              f"with the label in column {index}")
        return cols[0], cols[index]

    sentences = _sentences(path, split_lines(decode_bytes(raw, path, encoding)), parse)
    return _labelled_corpus(path, "conll", raw, sentences, str(index))


def _labelled_corpus(path: str, format: str, raw: bytes, sentences: list, column: str) -> Corpus:
    if not sentences:
        raise CorpusError(f"{path}: no sentences found; nothing to embed")
    examples = [Example(i, " ".join(words), tuple(words), tuple(labels), line)
                for i, (words, labels, line) in enumerate(sentences)]
    stats = {"sentences": len(examples), "words": sum(len(e.words) for e in examples)}
    return Corpus(path, format, hashlib.sha256(raw).hexdigest(), examples, stats, column)


def read_corpus(path: str | Path, format: str = "text", encoding: str = "utf-8",
                keep_blank: bool = False, column: str | int | None = None) -> Corpus:
    if format == "text":
        return read_text(path, encoding=encoding, keep_blank=keep_blank)
    if format == "conllu":
        return read_conllu(path, column=column, encoding=encoding)
    if format == "conll":
        return read_conll(path, column=column, encoding=encoding)
    raise CorpusError(f"unknown corpus format {format!r}; choose one of {', '.join(FORMATS)}")


def concat(parts: list[Corpus]) -> Corpus:
    """Corpora one after another as one corpus: examples renumbered, sha256 over the parts'."""
    if len(parts) == 1:
        return parts[0]
    examples = []
    for part in parts:
        examples.extend(Example(len(examples) + e.index, e.text, e.words, e.labels, e.line)
                        for e in part.examples)
    sha = hashlib.sha256("".join(f"{p.sha256}\n" for p in parts).encode()).hexdigest()
    stats = {key: sum(p.stats.get(key, 0) for p in parts) for key in parts[0].stats}
    return Corpus(",".join(p.path for p in parts), parts[0].format, sha, examples, stats,
                  parts[0].label_column)


def read_splits(splits: dict[str, str], format: str = "text", encoding: str = "utf-8",
                keep_blank: bool = False, column: str | int | None = None
                ) -> tuple[Corpus, dict[str, dict]]:
    """Named split files (train=PATH, ...) read as one corpus, examples in the order given.

    Returns the corpus and, per split, its path and example range: {"path", "first_example",
    "n_examples"}.
    """
    if not splits:
        raise CorpusError("no corpus given: pass a corpus file or --split NAME=PATH")
    parts, ranges, first = [], {}, 0
    for name, path in splits.items():
        parts.append(read_corpus(path, format=format, encoding=encoding, keep_blank=keep_blank,
                                 column=column))
        ranges[name] = {"path": str(path), "first_example": first,
                        "n_examples": len(parts[-1].examples)}
        first += len(parts[-1].examples)
    return concat(parts), ranges
