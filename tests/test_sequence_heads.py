"""Sequence heads (BiLSTM, attention, CRF) trained on the cache alone: the CRF against brute
force, padding that never leaks, decode_words for every head kind, fit / evaluate / sweep /
CLI, streaming, old head directories, and a model that fails if anything runs it."""

import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.evaluation import evaluate
from pipeline.settings import FitSettings, SettingsError
from pipeline.training import (Features, HeadConfig, SavedHead, Sequences, build_head,
                               decode_words, fit, load_head, sweep)
from pipeline.training.crf import CRF
from pipeline.training.sequence import BiLSTM

FAST = dict(hidden=16, depth=1, dropout=0.0, epochs=12, lr=0.01, batch_size=256,
            device="cpu")


@pytest.fixture(scope="module")
def seq_cache(tiny_model, tmp_path_factory):
    """One cache for the module (embedding is the slow part): 60 lines like conftest's
    small_corpus, in shards of ~400 tokens so that streaming has shards to drop."""
    from pipeline.embedding import embed

    folder = tmp_path_factory.mktemp("seq")
    lines = []
    for i in range(60):
        lines += [f"Call me Ishmael {i}. Some years ago, never mind how long precisely!",
                  "The quick brown fox jumped over the lazy dog."]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n")
    embed(str(folder / "corpus.txt"), folder / "cache", model=tiny_model, shard_tokens=400,
          progress=False)
    return folder / "cache"


def brute_force(crf: CRF, emissions: torch.Tensor, n: int, n_labels: int):
    """Every path's score of one example of length n: (paths, log Z)."""
    paths = list(itertools.product(range(n_labels), repeat=n))
    scores = []
    for path in paths:
        total = crf.start[path[0]] + emissions[0, path[0]] + crf.end[path[-1]]
        for t in range(1, n):
            total = total + crf.transitions[path[t - 1], path[t]] + emissions[t, path[t]]
        scores.append(total)
    scores = torch.stack(scores)
    return paths, scores, torch.logsumexp(scores, 0)


def test_crf_partition_viterbi_and_marginals_match_brute_force():
    torch.manual_seed(0)
    crf = CRF(3)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        log_z = crf.log_partition(emissions, mask)
        best = crf.viterbi(emissions, mask)
        marginals = crf.marginals(emissions, mask)
        for b, n in enumerate((4, 2)):
            paths, scores, expected = brute_force(crf, emissions[b], n, 3)
            assert log_z[b] == pytest.approx(float(expected), abs=1e-4)
            assert best[b, :n].tolist() == list(paths[int(scores.argmax())])
            weights = (scores - expected).exp()
            for t in range(n):
                for label in range(3):
                    p = sum(float(w) for path, w in zip(paths, weights) if path[t] == label)
                    assert marginals[b, t, label] == pytest.approx(p, abs=1e-5)
        # a fully labelled path: nll = log Z - its score; an unlabelled word sums over labels
        labels = torch.tensor([[0, 2, 1, 1], [1, 0, -100, -100]])
        paths, scores, expected = brute_force(crf, emissions[0], 4, 3)
        assert crf.nll(emissions[:1], labels[:1], mask[:1]) == pytest.approx(
            float(expected - scores[paths.index((0, 2, 1, 1))]), abs=1e-4)
        partial = torch.tensor([[0, -100, 1, 1]])
        free = torch.logsumexp(torch.stack([scores[paths.index((0, k, 1, 1))]
                                            for k in range(3)]), 0)
        assert crf.nll(emissions[:1], partial, mask[:1]) == pytest.approx(
            float(expected - free), abs=1e-4)


def test_padding_never_changes_a_real_words_output():
    torch.manual_seed(0)
    for module in (BiLSTM(6, 4, 2, 0.0).eval(),
                   build_head(HeadConfig("attention", 6, 3, hidden=8, depth=2)).eval()):
        x = torch.randn(2, 5, 6)
        mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
        out = module(x, mask)
        alone = module(x[1:, :3], mask[1:, :3])
        x[1, 3:] = 100.0  # garbage in the padding
        assert torch.allclose(module(x, mask)[1, :3], out[1, :3], atol=1e-5)
        assert torch.allclose(alone[0], out[1, :3], atol=1e-5)


@pytest.mark.parametrize("kind, crf", [("linear", False), ("mlp", False), ("bilstm", False),
                                       ("bilstm", True), ("attention", True)])
def test_decode_words_serves_every_head_kind(kind, crf):
    torch.manual_seed(0)
    sequence = kind in ("bilstm", "attention")
    config = HeadConfig(kind, 8, 5, hidden=8 if kind != "linear" else 0,
                        depth=1 if sequence else 0, crf=crf)
    head = SavedHead(build_head(config).eval(), config, "t", list("abcde"), [0], {}, 0, {})
    features = Features([0], [torch.randn(20, 8).half()])
    rows = np.array([7, 8, 9, 2, 3, 15])
    example_ids = np.array([4, 4, 4, 1, 1, 9])  # any ids; consecutive runs are examples
    labels, probs = decode_words(head, features, rows, example_ids)
    assert labels.shape == (6,) and labels.dtype == np.int64
    assert probs.shape == (6, 5) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    if not crf:
        assert (labels == probs.argmax(1)).all()
    if sequence:  # an example decoded in the batch is decoded as if alone
        alone, alone_probs = decode_words(head, features, rows[3:5], example_ids[3:5])
        assert (alone == labels[3:5]).all() and np.allclose(alone_probs, probs[3:5], atol=1e-5)
    assert decode_words(head, features, rows[:0], example_ids[:0])[1].shape == (0, 5)


def test_sequences_batch_whole_examples_padded_to_their_longest():
    seqs = Sequences.from_runs(np.array([5, 6, 7, 20, 21, 40]), np.array([0, 0, 0, 3, 3, 8]))
    assert seqs.lengths.tolist() == [3, 2, 1]
    assert [b.tolist() for b in seqs.batches(np.arange(3), 6)] == [[0, 1], [2]]
    features = Features([0], [torch.arange(50, dtype=torch.float32)[:, None].half()])
    x, mask, positions = seqs.gather(features, np.array([0, 1]), torch.device("cpu"))
    assert x.shape == (2, 3, 1) and mask.tolist() == [[True] * 3, [True, True, False]]
    assert x[..., 0].tolist() == [[5, 6, 7], [20, 21, 0]] and positions.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("head, crf, layers", [("bilstm", False, "all"),
                                               ("bilstm", True, "mix"),
                                               ("attention", True, "1")])
def test_sequence_heads_fit_save_load_and_evaluate(seq_cache, tmp_path, head, crf, layers):
    metrics = fit(str(seq_cache), "first_letter", tmp_path / "head", head=head, crf=crf,
                  layers=layers, **FAST)
    assert metrics["word_accuracy"] > 0.8
    probe = metrics["baselines"]["linear_probe"]
    assert 0 < probe["word_accuracy"] <= 1 and probe["epochs"] >= 1
    assert metrics["head"] | {"kind": head, "crf": crf, "rows": "words"} == metrics["head"]
    saved = json.loads((tmp_path / "head" / "head.json").read_text())
    assert saved["head"]["kind"] == head and saved["head"]["crf"] is crf
    assert saved["head"]["depth"] == 1 and saved["fit"]["crf"] is crf
    loaded = load_head(tmp_path / "head")
    assert loaded.config.kind == head and (loaded.module.crf is not None) == crf
    again = evaluate(str(tmp_path / "head"), str(seq_cache), device="cpu")
    # the cache has no splits: evaluate scores every example, fit the held-out tail
    assert again["split"] == "all" and again["word_accuracy"] > 0.8


def test_an_epoch_never_runs_the_transformer(seq_cache, tmp_path, monkeypatch):
    """The cache is made first; then any load or forward pass of a model raises."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the transformer was run")
    for name in ("AutoModel", "AutoTokenizer", "BertModel", "AutoConfig"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", refuse)
    monkeypatch.setattr(transformers.BertModel, "forward", refuse)
    monkeypatch.setattr(torch.nn.Module, "__call__", _refuse_bert(torch.nn.Module.__call__))
    metrics = fit(str(seq_cache), "first_letter", tmp_path / "head", head="bilstm", crf=True,
                  **FAST | {"epochs": 2})
    assert metrics["train"]["epochs"] == 2


def _refuse_bert(call):
    def guarded(module, *args, **kwargs):
        if type(module).__module__.startswith("transformers"):
            raise AssertionError(f"{type(module).__name__} was run")
        return call(module, *args, **kwargs)
    return guarded


def test_sequence_heads_stream_under_max_memory(seq_cache, tmp_path):
    memory = fit(str(seq_cache), "first_letter", tmp_path / "a", head="bilstm", **FAST)
    streamed = fit(str(seq_cache), "first_letter", tmp_path / "b", head="bilstm",
                   max_memory="150KB", **FAST)
    assert streamed["word_accuracy"] > 0.8
    assert abs(streamed["word_accuracy"] - memory["word_accuracy"]) < 0.1


def test_sweep_trains_a_sequence_head_per_layer(seq_cache, tmp_path):
    result = sweep(str(seq_cache), "first_letter", tmp_path / "sweep", head="bilstm",
                   **FAST | {"epochs": 4})
    assert [row["layer"] for row in result["layers"]] == ["0", "1", "2", "mix"]
    assert result["head"] == "bilstm"


def test_heads_written_before_sequence_heads_still_load(seq_cache, tmp_path):
    fit(str(seq_cache), "first_letter", tmp_path / "head", epochs=1, device="cpu")
    path = tmp_path / "head" / "head.json"
    meta = json.loads(path.read_text())
    for key in ("depth", "crf", "chars"):
        del meta["head"][key]
    path.write_text(json.dumps(meta))
    assert load_head(tmp_path / "head").config.depth == 0


def test_crf_and_attention_widths_are_one_line_setting_errors():
    with pytest.raises(SettingsError, match="crf: a CRF needs a sequence head"):
        FitSettings.build(crf=True)
    with pytest.raises(SettingsError, match="hidden: an attention head needs a multiple of 4"):
        FitSettings.build(head="attention", hidden=30)
    result = CliRunner().invoke(main, ["fit", "c", "--out", "o", "--head", "mlp", "--crf"])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert len(result.output.splitlines()) == 1 and "crf" in result.output
