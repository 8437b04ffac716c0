"""Labelled corpora with one word per line: CoNLL-U, read with the `conllu` parser, and
CoNLL (2003 style, whitespace columns). One example per sentence: its text, its words, one
label per word, and where each word starts in the text.

A CoNLL-U sentence's text is its `# text` comment when the words can be found in it left to
right with only whitespace between them; otherwise the words joined by single spaces, with
none after a word marked SpaceAfter=No (on the word, or on the multiword token it ends) nor
inside a multiword token whose form is its words run together (don't = do + n't).
"""

from __future__ import annotations

import re
from typing import Iterator

import conllu
from conllu.exceptions import ParseException
from conllu.parser import parse_dict_value, parse_id_value

from pipeline.corpus.examples import Corpus, CorpusError, Example, check_label_count
from pipeline.corpus.text import read_lines

CONLLU_COLUMNS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
FIELDS = tuple(name.lower() for name in CONLLU_COLUMNS)
RAW = {name: (lambda cols, i: cols[i]) for name in FIELDS}  # labels stay the strings written
SPACES = re.compile(r"\s*")

# (text, word starts, words, labels, line of the first word)
Sentence = tuple[str, tuple[int, ...], list[str], list[str], int]


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


def find_words(text: str, words: list[str]) -> tuple[int, ...] | None:
    """Each word's char offset in `text`, the words taken left to right with only whitespace
    around them; None when the text holds anything else."""
    starts, pos = [], 0
    for word in words:
        pos = SPACES.match(text, pos).end()
        if not text.startswith(word, pos):
            return None
        starts.append(pos)
        pos += len(word)
    return tuple(starts) if SPACES.match(text, pos).end() == len(text) else None


def join_words(words: list[str], space_after: list[bool]) -> tuple[str, tuple[int, ...]]:
    """The words joined by a space where `space_after` says so, and each word's offset."""
    starts, pos = [], 0
    for word, space in zip(words, space_after):
        starts.append(pos)
        pos += len(word) + space
    text = "".join(word + " " * space for word, space in zip(words[:-1], space_after))
    return text + words[-1], tuple(starts)


def blocks(lines: list[str], first_line: int = 1) -> Iterator[tuple[int, list[str]]]:
    """Blank-line separated blocks of lines, each with the line number of its first line
    (the first of `lines` being line `first_line`)."""
    block, first = [], 0
    for no, line in enumerate(lines + [""], start=first_line):
        if line and not line.isspace():
            if not block:
                first = no
            block.append(line)
        elif block:
            yield first, block
            block = []


def check_conllu_line(path: str, no: int, line: str) -> None:
    """A word line the conllu parser will read as written: ten tab-separated, non-empty
    columns (it also splits on two spaces, so those would shift the columns)."""
    cols = line.split("\t")
    if len(cols) != 10:
        raise CorpusError(f"{path}: line {no}: expected 10 tab-separated CoNLL-U columns, "
                          f"got {len(cols)}; is this a CoNLL-U file?")
    if "" in cols:
        raise CorpusError(f"{path}: line {no}: empty {CONLLU_COLUMNS[cols.index('')]} column; "
                          f"write _ for no value")
    if "  " in line:
        raise CorpusError(f"{path}: line {no}: two spaces in a row, which CoNLL-U parsers "
                          f"read as a column break; use tabs between columns")


def no_space_after(misc: str) -> bool:
    return "SpaceAfter=No" in misc and (parse_dict_value(misc) or {}).get("SpaceAfter") == "No"


def conllu_sentence(path: str, first: int, block: list[str],
                    field: str) -> tuple[Sentence, bool] | None:
    """One block of a CoNLL-U file -> (sentence, whether its text is the `# text` comment),
    or None for a block without words. Multiword tokens (1-2) and empty nodes (8.1) are
    skipped; the labels are the syntactic words' `field`."""
    numbers = [first + i for i, line in enumerate(block) if not line.strip().startswith("#")]
    for no in numbers:
        check_conllu_line(path, no, block[no - first])
    parsed = conllu.parse_token_and_metadata("\n".join(block), fields=FIELDS, field_parsers=RAW)
    words, labels, spaces, line = [], [], [], 0
    multiword = None  # the open multiword token: (its first word index, last word id, FORM, MISC)
    for no, token in zip(numbers, parsed, strict=True):
        try:
            word_id = parse_id_value(token["id"])
        except ParseException:
            word_id = None
        if word_id is None:
            raise CorpusError(f"{path}: line {no}: bad word ID {token['id']!r}")
        if isinstance(word_id, tuple):  # 1-2 spans words written as one token; 8.1 is no word
            if word_id[1] == "-":
                multiword = (len(words), word_id[2], token["form"], token["misc"])
            continue
        line = line or no
        words.append(token["form"])
        labels.append(token[field])
        spaces.append(not no_space_after(token["misc"]))
        if multiword and word_id == multiword[1]:
            first_word, _, form, misc = multiword
            if "".join(words[first_word:]) == form:  # don't = do + n't, written as one
                spaces[first_word:-1] = [False] * (len(words) - 1 - first_word)
            spaces[-1] = spaces[-1] and not no_space_after(misc)
            multiword = None
    if not words:
        return None
    given = parsed.metadata.get("text")
    found = find_words(given, words) if given else None
    text, starts = (given, found) if found is not None else join_words(words, spaces)
    return (text, starts, words, labels, line), found is not None


def conllu_sentences(path: str, lines: list[str], column: str | int | None = None,
                     first_line: int = 1) -> tuple[list[Sentence], int]:
    """The sentences of CoNLL-U lines (the first being line `first_line` of `path`) and how
    many of their texts were made from the words."""
    field = FIELDS[conllu_column(column)]
    read = [conllu_sentence(path, first, block, field) for first, block in blocks(lines, first_line)]
    return ([sentence for sentence, _ in filter(None, read)],
            sum(not given for _, given in filter(None, read)))


def read_conllu(path, column: str | int | None = None, encoding: str = "utf-8") -> Corpus:
    """CoNLL-U: one example per sentence, FORM as words, `column` (default UPOS) as labels."""
    path = str(path)
    lines, sha256 = read_lines(path, encoding)
    sentences, from_words = conllu_sentences(path, lines, column)
    corpus = labelled_corpus(path, "conllu", sha256, sentences,
                             CONLLU_COLUMNS[conllu_column(column)])
    corpus.stats["texts_from_words"] = from_words
    return corpus


def conll_column(column: str | int | None) -> int:
    try:
        return -1 if column is None else int(column)
    except ValueError:
        raise CorpusError(f"CoNLL label column must be an index like 3 or -1, got {column!r}") \
            from None


def read_conll(path, column: str | int | None = None, encoding: str = "utf-8") -> Corpus:
    """CoNLL (2003 style): whitespace columns, word first, label in `column` (0-based, default
    the last); a blank line between sentences; -DOCSTART- lines are ignored. The text is the
    words joined by single spaces."""
    path, index = str(path), conll_column(column)
    lines, sha256 = read_lines(path, encoding)
    sentences, _ = conll_sentences(path, lines, column)
    return labelled_corpus(path, "conll", sha256, sentences, str(index))


def conll_sentences(path: str, lines: list[str], column: str | int | None = None,
                    first_line: int = 1, n_columns: int = 0) -> tuple[list[Sentence], int]:
    """The sentences of CoNLL lines (the first being line `first_line` of `path`), each line
    with `n_columns` columns (0: as many as the first word line has), and that count."""
    index = conll_column(column)
    sentences = []
    for first, block in blocks(lines, first_line):
        words, labels, line = [], [], 0
        for no, text in enumerate(block, start=first):
            cols = text.split()
            if cols[0] == "-DOCSTART-":
                continue
            n_columns = n_columns or len(cols)
            if len(cols) != n_columns or not -len(cols) <= index < len(cols) or len(cols) < 2:
                raise CorpusError(f"{path}: line {no}: {len(cols)} columns, expected "
                                  f"{n_columns} with the label in column {index}")
            line = line or no
            words.append(cols[0])
            labels.append(cols[index])
        if words:
            sentences.append((*join_words(words, [True] * len(words)), words, labels, line))
    return sentences, n_columns


def labelled_corpus(path: str, format: str, sha256: str, sentences: list[Sentence],
                    column: str) -> Corpus:
    if not sentences:
        raise CorpusError(f"{path}: no sentences found; nothing to embed")
    examples = [Example(i, text, tuple(words), tuple(labels), line, starts)
                for i, (text, starts, words, labels, line) in enumerate(sentences)]
    stats = {"sentences": len(examples), "words": sum(len(e.words) for e in examples)}
    return check_label_count(Corpus(path, format, sha256, examples, stats, column))
