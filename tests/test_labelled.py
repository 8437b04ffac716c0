"""Labelled corpora (CoNLL-U, CoNLL), train/dev/test caches, labels added later."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.embedding import forward as embed_forward
from pipeline.embedding import run as embed_run
from pipeline import api
from pipeline.cli import main
from pipeline.corpus import CorpusError, read_conll, read_conllu
from pipeline.training import fit
from pipeline.labels import label, write_corpus_labels
from pipeline.store import Cache
from pipeline.tasks import IGNORE
from tests_paths import EWT

# (word, UPOS, XPOS): a tiny grammar whose tags follow from the words
LEXICON = {"the": "DET", "a": "DET", "whale": "NOUN", "sea": "NOUN", "ship": "NOUN",
           "captain": "NOUN", "dog": "NOUN", "fox": "NOUN", "jumped": "VERB", "call": "VERB",
           "was": "AUX", "is": "AUX", "white": "ADJ", "quick": "ADJ", "lazy": "ADJ",
           "brown": "ADJ", "over": "ADP", "in": "ADP", ".": "PUNCT", "me": "PRON",
           "he": "PRON", "and": "CCONJ", "harpoon": "NOUN"}
SENTENCES = ["the quick brown fox jumped over the lazy dog .",
             "call me the white whale .", "he was in the sea and the ship was white .",
             "the captain is a lazy harpoon ."]  # harpoon: h ##a ##r ... in the tiny vocabulary


def conllu_text(sentences, extra_tag=None) -> str:
    blocks = []
    for n, sentence in enumerate(sentences):
        lines = [f"# sent_id = {n}", f"# text = {sentence}"]
        for i, word in enumerate(sentence.split(), start=1):
            tag = extra_tag if extra_tag and word == "whale" else LEXICON[word]
            lines.append(f"{i}\t{word}\t{word}\t{tag}\t{tag.lower()}\t_\t0\tdep\t_\t_")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n\n"


@pytest.fixture
def splits(tmp_path):
    train = tmp_path / "train.conllu"
    train.write_text(conllu_text(SENTENCES * 6))
    dev = tmp_path / "dev.conllu"
    dev.write_text(conllu_text(SENTENCES[:2]))
    test = tmp_path / "test.conllu"
    test.write_text(conllu_text(SENTENCES[1:3], extra_tag="X"))  # X: never in training
    return {"train": str(train), "dev": str(dev), "test": str(test)}


@pytest.fixture
def split_cache(tiny_model, splits, tmp_path):
    api.embed(None, tmp_path / "cache", model=tiny_model, format="conllu", splits=splits,
              progress=False)  # the API adds the corpus labels; the embed engine knows no task
    return tmp_path / "cache"


def test_conllu_skips_ranges_and_empty_nodes_and_picks_a_column(tmp_path):
    path = tmp_path / "a.conllu"
    path.write_text("# text = don't go\n1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
                    "1\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n"
                    "2.1\tx\tx\tX\tX\t_\t_\t_\t_\t_\n3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n"
                    "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n")
    corpus = read_conllu(path)
    assert [e.words for e in corpus.examples] == [("do", "n't", "go"), ("Hi",)]
    assert corpus.examples[0].labels == ("AUX", "PART", "VERB")
    assert corpus.examples[0].text == "don't go"  # the `# text` comment
    assert corpus.examples[0].word_starts == (0, 2, 6)
    assert read_conllu(path, column="XPOS").examples[0].labels == ("VBP", "RB", "VB")
    assert read_conllu(path, column="deprel").examples[1].labels == ("root",)


def test_malformed_conllu_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conllu"
    path.write_text("1\tthe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n2\twhale NOUN\n")
    with pytest.raises(CorpusError, match=r"bad.conllu: line 2: expected 10 tab-separated"):
        read_conllu(path)


def test_conll_ignores_docstart_and_takes_the_label_column(tmp_path):
    path = tmp_path / "a.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                    "Peter NNP B-NP B-PER\n")
    corpus = read_conll(path)
    assert [e.words for e in corpus.examples] == [("EU", "rejects"), ("Peter",)]
    assert corpus.examples[0].labels == ("B-ORG", "O")
    assert read_conll(path, column=1).examples[1].labels == ("NNP",)
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ O\n")
    with pytest.raises(CorpusError, match=r"a.conll: line 2: 3 columns, expected 4"):
        read_conll(path)


def test_more_labels_than_int16_holds_is_an_error_naming_file_and_count(tmp_path):
    path = tmp_path / "many.conll"
    path.write_text("".join(f"w{i} L{i}\n" for i in range(40_000)))
    with pytest.raises(CorpusError, match=r"many.conll: 40,000 distinct labels"):
        write_corpus_labels(None, "many", read_conll(path))  # refused before the cache is read


def test_split_cache_labels_first_subtokens_only(split_cache):
    cache = Cache(split_cache)
    splits = cache.manifest["splits"]
    assert [splits[s]["n_examples"] for s in ("train", "dev", "test")] == [24, 2, 2]
    assert splits["dev"]["first_example"] == 24
    assert cache.texts()[0] == SENTENCES[0]
    names = cache.label_names("upos")
    assert "X" in names and "NOUN" in names
    labels, word_ids = cache.read_labels("upos"), cache.read("word_ids")
    example_ids = cache.read("example_ids")
    rows = np.flatnonzero(example_ids == 3)
    harpoon = rows[word_ids[rows] == 5]
    assert len(harpoon) == 7
    assert names[labels[harpoon[0]]] == "NOUN"
    assert all(labels[r] == IGNORE for r in harpoon[1:])
    assert labels[rows[0]] == IGNORE and labels[rows[-1]] == IGNORE  # [CLS], [SEP]
    n_words = sum(len(s.split()) for s in SENTENCES * 6 + SENTENCES[:2] + SENTENCES[1:3])
    assert int((labels != IGNORE).sum()) == n_words


def test_label_adds_tasks_without_any_forward_pass(split_cache, splits, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the transformer must not run")
    monkeypatch.setattr(embed_run, "load_model", no_model)
    monkeypatch.setattr(embed_forward, "forward_layers", no_model)
    files = [splits["train"], splits["dev"], splits["test"]]
    result = label(str(split_cache), "xpos", files, column="XPOS", label_all=True)
    cache = Cache(split_cache)
    assert result["n_labels"] == len(cache.label_names("xpos"))
    xpos, upos = cache.read_labels("xpos"), cache.read_labels("upos")
    assert (xpos != IGNORE).sum() > (upos != IGNORE).sum()  # every subtoken labelled
    assert cache.manifest["tasks"]["xpos"]["label_all"] is True
    for task in ("word_initial", "capitalisation", "word_length"):
        label(str(split_cache), task)
        assert cache_has(split_cache, task)
    lengths = Cache(split_cache).read_labels("word_length")
    assert set(lengths[lengths != IGNORE]) <= set(range(6))


def cache_has(cache_dir, task):
    return Cache(cache_dir).has_labels(task)


def test_label_refuses_a_file_with_other_words(split_cache, splits, tmp_path):
    other = tmp_path / "other.conllu"
    text = conllu_text(SENTENCES * 6 + SENTENCES[:2] + SENTENCES[1:3])
    other.write_text(text.replace("\twhite\twhite\t", "\tblack\tblack\t", 1))
    with pytest.raises(CorpusError, match=r"other.conllu: line \d+: sentence 2 differs"):
        label(str(split_cache), "tags", [str(other)])
    with pytest.raises(CorpusError, match="2 sentences, the cache has 28 examples"):
        label(str(split_cache), "tags", [splits["dev"]])


def test_fit_on_splits_early_stops_and_reports_baselines_and_unknown(split_cache, tmp_path):
    metrics = fit(str(split_cache), "upos", tmp_path / "head", head="mlp", hidden=32,
                  epochs=40, lr=0.01, batch_size=64, patience=2, device="cpu",
                  selectivity=True)
    assert metrics["split"] == "test"
    assert set(metrics["baselines"]) == {"majority", "lookup"}
    # the lookup table knows every test word but "whale", whose test tag X is unseen
    assert metrics["baselines"]["lookup"]["word_accuracy"] > 0.8
    assert metrics["unknown"]["labels"] == {"X": 1} and metrics["unknown"]["n_words"] == 1
    assert metrics["word_accuracy"] < 1.0  # the unknown word can never be right
    assert 1 <= metrics["dev"]["best_epoch"] <= metrics["train"]["epochs"] < 40
    assert "selectivity" in metrics["selectivity"]
    saved = json.loads((tmp_path / "head" / "head.json").read_text())
    assert saved["head"]["kind"] == "mlp" and saved["head"]["hidden"] == 32


def test_cli_bad_inputs_are_one_line_errors(split_cache, tiny_model, tmp_path, splits):
    runner = CliRunner()
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tthe\tthe\tDET\n")
    cases = [
        (["embed", "--format", "conllu", "--split", f"train={bad}", "--out", str(tmp_path / "c"),
          "--model", tiny_model], "bad.conllu: line 1"),
        (["label", str(split_cache), "--task", "nope"], "unknown task 'nope'"),
        (["fit", str(split_cache), "--task", "upos", "--out", str(tmp_path / "h"),
          "--layers", "5"], "out of range"),
        (["label", str(split_cache), "--task", "t", "--from", splits["dev"]], "2 sentences"),
        (["label", str(split_cache), "--task", "../shards/x", "--from", splits["dev"]],
         "task name '../shards/x'"),
        (["label", str(split_cache), "--task", "xpos"],
         f"pipeline label {split_cache} --task xpos --from FILE.conllu"),
        (["fit", str(split_cache), "--task", "xpos", "--out", str(tmp_path / "h")],
         f"{split_cache} has no such labels"),
    ]
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.integration
def test_ewt_integration_slice(tmp_path):
    """The default model on 600 sentences of EWT dev cut into train/dev/test splits."""
    if not (EWT / "en_ewt-ud-dev.conllu").exists():
        pytest.skip(f"{EWT} not found")
    lines = (EWT / "en_ewt-ud-dev.conllu").read_text().split("\n\n")
    for name, chunk in (("train", lines[:400]), ("dev", lines[400:500]), ("test", lines[500:600])):
        (tmp_path / f"{name}.conllu").write_text("\n\n".join(chunk) + "\n\n")
    splits = {n: str(tmp_path / f"{n}.conllu") for n in ("train", "dev", "test")}
    api.embed(None, tmp_path / "cache", format="conllu", splits=splits, progress=False)
    metrics = fit(str(tmp_path / "cache"), "upos", tmp_path / "head", epochs=8)
    assert metrics["word_accuracy"] > metrics["baselines"]["majority"]["word_accuracy"] + 0.3
    assert metrics["word_accuracy"] > 0.8

