"""Bytes of a corpus file -> lines, strictly: undecodable bytes, binary files and empty corpora
are errors that name the file and the place; and the plain-text format, one example per line."""

from __future__ import annotations

import codecs
import hashlib
import re
from pathlib import Path

from pipeline.corpus.examples import Corpus, CorpusError, Example
from pipeline.settings import text_codec


def read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: corpus file not found") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, expected a corpus file") from None


# what no tokenizer gets: NUL (binary data, and HDF5 cannot store it in a string), lone
# surrogates (half a UTF-16 pair: not encodable as UTF-8, so not passable to the Rust
# tokenizer) and the Unicode noncharacters (U+FDD0..U+FDEF and U+xFFFE, U+xFFFF of every plane)
NOT_TEXT = re.compile("[\x00\ud800-\udfff\ufdd0-\ufdef"
                      + "".join(f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}"
                                for plane in range(17)) + "]")
WIDE_ENCODINGS = ("utf16", "utf32", "u16", "u32")  # where NUL bytes are part of the text


def normal_encoding(encoding: str) -> str:
    return encoding.lower().replace("-", "").replace("_", "")


def check_codec(encoding: str, where: str = "--encoding") -> codecs.CodecInfo:
    """The codec of a text encoding; an unknown name or a bytes-to-bytes codec (base64,
    rot13, zlib) is a one-line CorpusError."""
    try:
        return text_codec(encoding)  # the rule lives with the setting it checks
    except ValueError as err:
        raise CorpusError(f"{where}: {err}") from None


def line_of(text: str, position: int) -> int:
    """The 1-based line (LF, CRLF or CR endings, as split_lines counts them) of a position."""
    before = text[:position]
    return before.count("\n") + before.count("\r") - before.count("\r\n") + 1


def check_text(text: str, where: str, first_line: int = 1) -> str:
    """`text` if a tokenizer can take all of it; else a one-line CorpusError naming `where`,
    the line (counted from `first_line`) and the character."""
    bad = NOT_TEXT.search(text)
    if bad is None:
        return text
    char = bad.group()
    line = line_of(text, bad.start()) + first_line - 1
    if char == "\x00":
        what = "a NUL character (U+0000); is this a binary file? expected text"
    elif "\ud800" <= char <= "\udfff":
        what = (f"a lone surrogate U+{ord(char):04X} (half of a UTF-16 pair, not text); the "
                f"file or --encoding is wrong")
    else:
        what = f"the noncharacter U+{ord(char):04X}, which is not text"
    raise CorpusError(f"{where}: line {line}: {what}")


def decode_bytes(raw: bytes, path: str, encoding: str = "utf-8", first_line: int = 1,
                 byte_offset: int = 0) -> str:
    """Decode a whole file, or a byte range of one that starts at a line start: `first_line`
    and `byte_offset` are where the range starts in its file (a range of a file is never cut
    inside a character, see pipeline.corpus.ranges). At the file's start a byte-order mark is
    dropped; bad bytes name line and offset, and characters no tokenizer takes (check_text)
    name their line."""
    check_codec(encoding, f"{path}: --encoding")
    wide = normal_encoding(encoding).startswith(WIDE_ENCODINGS)
    if byte_offset == 0 and b"\x00" in raw[:8192] and not wide:
        raise CorpusError(f"{path}: looks like a binary file (NUL bytes); expected text")
    utf8 = normal_encoding(encoding) in ("utf8", "utf8sig", "u8")
    codec = ("utf-8-sig" if byte_offset == 0 else "utf-8") if utf8 else encoding
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as err:
        bad = raw[err.start:max(err.end, err.start + 1)][:4]
        what = (f"byte 0x{bad[0]:02x} is" if len(bad) == 1
                else "bytes " + " ".join(f"0x{b:02x}" for b in bad) + " are")
        raise CorpusError(
            f"{path}: line {_line_before(raw, err.start, codec) + first_line - 1}, byte offset "
            f"{err.start + byte_offset}: "
            f"{what} not valid {encoding} ({err.reason}); pass --encoding (e.g. --encoding "
            f"cp1252) if the file uses another encoding") from None
    except (UnicodeError, ValueError, TypeError, LookupError) as err:  # e.g. idna's labels
        raise CorpusError(f"{path}: cannot decode as {encoding} "
                          f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
                          ) from None
    return check_text(text, path, first_line)


def _line_before(raw: bytes, end: int, codec: str) -> int:
    """The line of byte offset `end`, counted in the text decoded before it (in UTF-16 a
    newline is not one byte 0x0a)."""
    for cut in range(end, max(-1, end - 4), -1):  # back to a whole character
        try:
            return line_of(raw[:cut].decode(codec), cut)
        except (UnicodeError, ValueError):
            continue
    return raw.count(b"\n", 0, end) + 1


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


def text_examples(lines: list[str], keep_blank: bool = False) -> tuple[list[str], dict]:
    """The examples of plain-text lines (one per line, blank ones skipped unless kept) and
    their counts: lines, blank_lines_skipped, and nonblank (the lines with any text)."""
    kept = [line for line in lines if keep_blank or line.strip()]
    nonblank = sum(1 for line in kept if line.strip()) if keep_blank else len(kept)
    return kept, {"lines": len(lines), "blank_lines_skipped": len(lines) - len(kept),
                  "nonblank": nonblank}


def empty_text_error(path: str, n_lines: int) -> CorpusError:
    what = "has only blank lines" if n_lines else "is empty"
    return CorpusError(f"{path}: corpus {what}; nothing to embed")


def read_text(path: str | Path, encoding: str = "utf-8", keep_blank: bool = False) -> Corpus:
    """Read a plain-text corpus: one example per line."""
    path = str(path)
    lines, sha256 = read_lines(path, encoding)
    kept, stats = text_examples(lines, keep_blank)
    if not stats.pop("nonblank"):
        raise empty_text_error(path, len(lines))
    examples = [Example(i, line) for i, line in enumerate(kept)]
    return Corpus(path, "text", sha256, examples, stats)
