import pytest

from pipeline.corpus import CorpusError, read_corpus, split_lines


def test_bom_and_crlf_are_decoded(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"\xef\xbb\xbfCall me Ishmael.\r\n\r\nSome years ago\r\nlast")
    corpus = read_corpus(path)
    assert [e.text for e in corpus.examples] == ["Call me Ishmael.", "Some years ago", "last"]
    assert corpus.stats == {"lines": 4, "blank_lines_skipped": 1}


def test_keep_blank_keeps_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\n\nb\n")
    assert [e.text for e in read_corpus(path, keep_blank=True).examples] == ["a", "", "b"]


def test_split_lines_handles_every_newline_convention():
    assert split_lines("a\r\nb\rc\nd\n") == ["a", "b", "c", "d"]


def test_cp1252_bytes_name_line_and_offset(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes("first line\nsecond caf".encode() + b"\xe9\n")
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    message = str(err.value)
    assert "line 2" in message and "byte offset 21" in message and "--encoding" in message
    assert "\n" not in message
    assert read_corpus(path, encoding="cp1252").examples[1].text == "second café"


@pytest.mark.parametrize("content, reason", [(b"", "is empty"), (b"\r\n  \n\n", "only blank")])
def test_empty_corpus_is_an_error(tmp_path, content, reason):
    path = tmp_path / "e.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=reason):
        read_corpus(path)


def test_binary_file_is_an_error(tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(b"\x00\x01\x02binary" * 10)
    with pytest.raises(CorpusError, match="binary"):
        read_corpus(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "nope.txt")
