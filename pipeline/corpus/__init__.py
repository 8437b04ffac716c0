"""Corpus files -> examples.

An example is one unit the transformer sees at once: a line of a plain-text file, or a
sentence of a CoNLL-U / CoNLL file, whose words arrive pre-split with one label each and
with their char offsets in the sentence text. Reading is strict: undecodable bytes, binary
files, malformed lines and empty corpora are errors that name the file and the place.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.corpus.columns import (CONLLU_COLUMNS, conllu_column, find_words, join_words,
                                     read_conll, read_conllu)
from pipeline.corpus.examples import Corpus, CorpusError, Example, concat
from pipeline.corpus.text import (check_codec, check_text, decode_bytes, read_bytes, read_text,
                                   split_lines)

FORMATS = ("text", "conllu", "conll")

__all__ = ["CONLLU_COLUMNS", "FORMATS", "Corpus", "CorpusError", "Example", "check_codec",
           "check_text", "concat",
           "conllu_column", "decode_bytes", "find_words", "join_words", "read_bytes",
           "read_conll", "read_conllu", "read_corpus", "read_splits", "read_text",
           "split_lines"]


def read_corpus(path: str | Path, format: str = "text", encoding: str = "utf-8",
                keep_blank: bool = False, column: str | int | None = None) -> Corpus:
    if format == "text":
        return read_text(path, encoding=encoding, keep_blank=keep_blank)
    if format == "conllu":
        return read_conllu(path, column=column, encoding=encoding)
    if format == "conll":
        return read_conll(path, column=column, encoding=encoding)
    raise CorpusError(f"unknown corpus format {format!r}; choose one of {', '.join(FORMATS)}")


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
