"""Character features of word forms (`--chars`): the ids, the CNN, and a sequence head that
learns from spelling what the uncased tokenizer cannot see, through fit, evaluate and
predict."""

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.evaluation import evaluate
from pipeline.predict import predict
from pipeline.settings import SettingsError
from pipeline.training import HeadConfig, SavedHead, build_head, decode_words, fit, load_head
from pipeline.training.chars import BEGIN, END, MAX_CHARS, PAD, CharCNN, char_table


def char_ids(forms):
    """(len(forms), MAX_CHARS) ids of each word."""
    table, owner = char_table(forms)
    return table[owner]
from pipeline.training.features import Features

FAST = dict(hidden=16, depth=1, dropout=0.0, epochs=12, lr=0.01, batch_size=256,
            device="cpu")


def test_char_ids_mark_the_word_and_keep_its_ends():
    ids = char_ids(["Cat", "cat", "Cat", "", "x" * 12 + "MIDDLE" + "y" * 12])
    assert ids.shape == (5, MAX_CHARS) and ids.dtype == np.int64
    assert ids[0, 0] == BEGIN and ids[0, 4] == END and (ids[0, 5:] == PAD).all()
    assert (ids[0] == ids[2]).all() and ids[0, 1] != ids[1, 1]  # case is kept
    assert ids[3, :2].tolist() == [BEGIN, END]
    long = ids[4]  # 30 characters: the first 11 and the last 11 remain
    assert long[-1] == END and (long[1:12] == char_ids(["x"])[0, 1]).all()
    assert (long[12:23] == char_ids(["y"])[0, 1]).all()
    assert char_ids(["\U0001F40B", "\u00e9"]).max() < 4096  # any code point gets an id


def test_char_table_holds_each_form_once():
    table, owner = char_table(["sea", "Sea", "sea", "sea"])
    assert table.shape == (2, MAX_CHARS) and owner.tolist()[1:] != [owner[0]] * 3
    assert owner[0] == owner[2] == owner[3] != owner[1]


def test_char_cnn_ignores_padding_and_reads_the_first_letter():
    torch.manual_seed(0)
    cnn = CharCNN()
    ids = torch.from_numpy(char_ids(["whale", "a"]))
    out = cnn(ids)
    assert out.shape == (2, CharCNN.out_features)
    assert torch.allclose(cnn(ids[:1]), out[:1])  # the short word's padding changes nothing
    assert torch.allclose(cnn(ids[1:]), out[1:], atol=1e-6)
    # the begin marker makes the first letter visible to a max-pooled n-gram
    assert not torch.allclose(cnn(torch.from_numpy(char_ids(["ab"]))),
                              cnn(torch.from_numpy(char_ids(["ba"]))))


def test_a_chars_head_trains_the_same_weights_every_run():
    """Repeated forms (most words of a batch) must add their gradients in a fixed order:
    DVC checks a fitted head's bytes against dvc.lock."""
    config = HeadConfig("bilstm", 8, 3, hidden=8, depth=1, chars=True)
    torch.manual_seed(0)
    head = build_head(config)
    rng = np.random.default_rng(0)
    forms = [str(w) for w in rng.choice(["the", "whale", "sea", "a", "Ahab"], size=(16, 40))
             .reshape(-1)]
    table, owner = char_table(forms)
    x, mask = torch.randn(16, 40, 8), torch.ones(16, 40, dtype=torch.bool)
    chars = (torch.from_numpy(table), torch.from_numpy(owner).view(16, 40))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # the racy kernel only races on several threads
    try:
        grads = []
        for _ in range(5):
            head.zero_grad()
            head(x, mask, chars).square().sum().backward()
            grads.append(head.chars.embed.weight.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.fixture(scope="module")
def case_cache(tiny_model, tmp_path_factory):
    """Lines of words in random case: the tiny model's tokenizer lowercases, so only the
    spelling tells 'capitalisation' apart."""
    from pipeline.embedding import embed
    from tests.conftest import WORDS

    rng = random.Random(0)
    lines = [" ".join(w.capitalize() if rng.random() < 0.5 else w
                      for w in rng.sample(WORDS, 8)) for _ in range(200)]
    folder = tmp_path_factory.mktemp("case")
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    embed(str(folder / "corpus.txt"), folder / "cache", model=tiny_model, layers="0",
          progress=False)
    return folder / "cache"


def test_chars_let_a_head_learn_what_only_spelling_shows(case_cache, tmp_path):
    blind = fit(str(case_cache), "capitalisation", tmp_path / "blind", head="bilstm", **FAST)
    reading = fit(str(case_cache), "capitalisation", tmp_path / "chars", head="bilstm",
                  chars=True, **FAST)
    assert blind["word_accuracy"] < 0.7  # case is random: the features cannot tell it
    assert reading["word_accuracy"] > 0.97
    assert reading["head"]["chars"] is True and blind["head"]["chars"] is False
    saved = json.loads((tmp_path / "chars" / "head.json").read_text())
    assert saved["head"]["chars"] is True and saved["fit"]["chars"] is True
    assert load_head(tmp_path / "chars").config.chars
    again = evaluate(str(tmp_path / "chars"), str(case_cache), device="cpu")
    assert again["word_accuracy"] > 0.97


def test_predict_reads_the_spelling_of_the_given_text(case_cache, tmp_path, tiny_model):
    fit(str(case_cache), "capitalisation", tmp_path / "head", head="bilstm", chars=True,
        **FAST)
    results = predict(str(tmp_path / "head"), ["The whale", "the Whale"], device="cpu")
    assert [[w["label"] for w in r["words"]] for r in results] == [["capitalised", "lower"],
                                                                  ["lower", "capitalised"]]


def test_decode_words_needs_the_forms_of_a_chars_head():
    config = HeadConfig("bilstm", 8, 3, hidden=8, depth=1, chars=True)
    head = SavedHead(build_head(config).eval(), config, "t", list("abc"), [0], {}, 0, {})
    features = Features([0], [torch.randn(5, 8).half()])
    rows, example_ids = np.arange(5), np.array([0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="word form"):
        decode_words(head, features, rows, example_ids)
    labels, probs = decode_words(head, features, rows, example_ids,
                                 forms=["A", "b", "C", "d", "E"])
    assert labels.shape == (5,) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_chars_need_a_sequence_head(case_cache, tmp_path):
    with pytest.raises(SettingsError, match="chars"):
        fit(str(case_cache), "capitalisation", tmp_path / "h", head="mlp", chars=True)
    result = CliRunner().invoke(main, ["fit", str(case_cache), "--out", str(tmp_path / "h"),
                                       "--head", "linear", "--chars"])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "chars" in result.output and not (tmp_path / "h").exists()


@pytest.mark.parametrize("kind", ["bilstm", "attention"])
def test_character_features_join_the_cached_ones_as_one_concatenated_input(kind):
    """The projections read [cached features, character features] without building the
    concatenation (sequence.joined_linear): same emissions as on the concatenation."""
    torch.manual_seed(0)
    config = HeadConfig(kind=kind, in_features=40, n_labels=5, hidden=16, depth=2, chars=True)
    head = build_head(config).eval()
    x, mask = torch.randn(3, 7, 40), torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    ids = torch.randint(3, 50, (4, MAX_CHARS))
    index = torch.randint(0, 4, (3, 7))
    joined = torch.cat([x, head.chars(ids).index_select(0, index.reshape(-1)).view(3, 7, -1)], -1)
    on_concatenation = head.out(head.encoder(joined, mask)) + head.skip(joined)
    assert torch.allclose(head(x, mask, (ids, index)), on_concatenation, atol=1e-5)
