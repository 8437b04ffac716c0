import pytest

from pipeline.corpus import CorpusError, read_corpus, read_splits, split_lines
from tests_paths import EWT


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


# a sentence with SpaceAfter=No, a multiword token (1-2 "Don't") and an empty node (4.1)
CONLLU = """# sent_id = 1
# text = Don't go, Bob!
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVB\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
4\t,\t,\tPUNCT\t,\t_\t5\tpunct\t_\t_
4.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t3:conj\t_
5\tBob\tBob\tPROPN\tNNP\t_\t3\tvocative\t_\tSpaceAfter=No
6\t!\t!\tPUNCT\t.\t_\t3\tpunct\t_\t_

"""


def starts_match(example) -> bool:
    return all(example.text[s:s + len(w)] == w for s, w in zip(example.word_starts, example.words))


def test_conllu_text_comes_from_the_text_comment(tmp_path):
    path = tmp_path / "a.conllu"
    path.write_text(CONLLU)
    (example,) = read_corpus(path, format="conllu").examples
    assert example.text == "Don't go, Bob!"
    assert example.words == ("Do", "n't", "go", ",", "Bob", "!")
    assert example.labels == ("AUX", "PART", "VERB", "PUNCT", "PROPN", "PUNCT")
    assert example.word_starts == (0, 2, 6, 8, 10, 13)
    assert example.line == 4


@pytest.mark.parametrize("comment", [None, "# text = Do not go, Bob!"])
def test_conllu_text_without_a_usable_comment_joins_the_words(tmp_path, comment):
    """No `# text`, or one the words are not in: the words joined, honouring SpaceAfter=No
    and writing a multiword token whose form is its words run together as one."""
    lines = [line for line in CONLLU.splitlines() if not line.startswith("# text")]
    if comment:
        lines.insert(1, comment)
    path = tmp_path / "a.conllu"
    path.write_text("\n".join(lines) + "\n")
    corpus = read_corpus(path, format="conllu")
    (example,) = corpus.examples
    assert example.text == "Don't go, Bob!" and example.word_starts == (0, 2, 6, 8, 10, 13)
    assert corpus.stats["texts_from_words"] == 1


def test_conllu_multiword_token_of_other_forms_keeps_its_words_apart(tmp_path):
    path = tmp_path / "es.conllu"
    path.write_text("1-2\tdel\t_\t_\t_\t_\t_\t_\t_\t_\n1\tde\tde\tADP\t_\t_\t0\troot\t_\t_\n"
                    "2\tel\tel\tDET\t_\t_\t1\tdet\t_\t_\n3\tmar\tmar\tNOUN\t_\t_\t1\tobj\t_\t_\n")
    (example,) = read_corpus(path, format="conllu").examples
    assert example.text == "de el mar" and starts_match(example)


@pytest.mark.parametrize("line, message", [
    ("1\tgo\tgo\tVERB\tVB\t_\t0\troot\t_", "line 2: expected 10 tab-separated"),
    ("x\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_", "line 2: bad word ID 'x'"),
    ("1\t\tgo\tVERB\tVB\t_\t0\troot\t_\t_", "line 2: empty FORM column"),
    ("1\tgo  on\tgo\tVERB\tVB\t_\t0\troot\t_\t_", "line 2: two spaces in a row"),
])
def test_malformed_conllu_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.conllu"
    path.write_text(f"# text = go\n{line}\n")
    with pytest.raises(CorpusError, match=f"bad.conllu: {message}") as err:
        read_corpus(path, format="conllu")
    assert "\n" not in str(err.value)


def test_undecodable_conllu_names_the_line(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_bytes(b"# text = go\n1\tg\xe9\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n")
    with pytest.raises(CorpusError, match="bad.conllu: line 2, byte offset"):
        read_corpus(path, format="conllu")


def test_conll_words_start_where_single_spaces_put_them(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("EU B-ORG\nrejects O\nGerman B-MISC\n")
    (example,) = read_corpus(path, format="conll").examples
    assert example.text == "EU rejects German" and example.word_starts == (0, 3, 11)


def test_concat_numbers_examples_in_order(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "b.txt").write_text("four\nfive\n")
    corpus, ranges = read_splits({"a": tmp_path / "a.txt", "b": tmp_path / "b.txt"})
    assert [e.index for e in corpus.examples] == [0, 1, 2, 3, 4]
    assert ranges["b"] == {"path": str(tmp_path / "b.txt"), "first_example": 3, "n_examples": 2}


@pytest.mark.skipif(not (EWT / "en_ewt-ud-dev.conllu").exists(), reason="EWT not found")
def test_ewt_dev_word_starts_point_at_the_words():
    corpus = read_corpus(EWT / "en_ewt-ud-dev.conllu", format="conllu")
    assert corpus.stats["sentences"] == len(corpus.examples) > 1000
    assert all(starts_match(e) for e in corpus.examples)
    assert corpus.stats["texts_from_words"] == 0  # every `# text` agrees with its words
    assert any("n't" in e.words and " n't" not in e.text for e in corpus.examples)
