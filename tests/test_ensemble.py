"""Ensembles of sequence heads (`--ensemble N`): members trained apart (member k as `--seed
seed+k` trains one head), read as one head by their mean probabilities; saved, loaded and
scored as one."""

import csv
import json

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.evaluation import evaluate
from pipeline.training import HeadConfig, build_head, fit, load_head, mix_weights
from pipeline.training.sequence import TaggerEnsemble
from pipeline.training.sweep import sweep
from safetensors.torch import load_file
from test_labelled import SENTENCES, conllu_text
from test_sequence_heads import FAST, seq_cache  # noqa: F401 (the module's cache fixture)


def _batch(n_features: int = 8):
    torch.manual_seed(1)
    x = torch.randn(2, 6, n_features)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    labels = torch.randint(0, 5, (2, 6)).masked_fill(~mask, -100)
    return x, mask, labels


@pytest.mark.parametrize("crf", [False, True])
def test_an_ensemble_labels_by_its_members_mean_probabilities(crf):
    torch.manual_seed(0)
    module = build_head(HeadConfig("bilstm", 8, 5, hidden=4, depth=1, crf=crf, ensemble=3)).eval()
    assert isinstance(module, TaggerEnsemble) and len(module.members) == 3
    first, second = (m.encoder.project.weight for m in module.members[:2])
    assert not torch.equal(first, second)  # each member starts from its own random weights
    x, mask, _ = _batch()
    with torch.no_grad():
        emissions = module(x, mask)
        labels, probabilities = module.decode(emissions, mask)
        alone = [m.decode(m(x, mask), mask)[1] for m in module.members]
    assert emissions.shape == (3, 2, 6, 5)
    expected = torch.stack(alone).mean(0)
    assert torch.allclose(probabilities, expected)
    assert torch.equal(labels, expected.argmax(-1))
    assert not torch.allclose(alone[0], alone[1])


def test_each_member_learns_from_its_own_loss():
    torch.manual_seed(0)
    module = build_head(HeadConfig("bilstm", 8, 5, hidden=4, depth=1, ensemble=2)).eval()
    x, mask, labels = _batch()
    module.loss(module(x, mask), labels, mask).backward()
    together = [p.grad.clone() for p in module.members[0].parameters()]
    module.zero_grad()
    member = module.members[0]
    (member.loss(member(x, mask), labels, mask) / 2).backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(together, member.parameters()))
    assert all(p.grad is None or not p.grad.any() for p in module.members[1].parameters())


def test_an_ensemble_fits_saves_loads_and_scores_as_one_head(seq_cache, tmp_path):  # noqa: F811
    metrics = fit(str(seq_cache), "first_letter", tmp_path / "head", head="bilstm", ensemble=2,
                  **FAST)
    assert metrics["word_accuracy"] > 0.8
    saved = json.loads((tmp_path / "head" / "head.json").read_text())
    assert saved["head"]["ensemble"] == 2 and saved["fit"]["ensemble"] == 2
    loaded = load_head(tmp_path / "head")
    assert isinstance(loaded.module, TaggerEnsemble) and len(loaded.module.members) == 2
    again = evaluate(str(tmp_path / "head"), str(seq_cache), device="cpu")
    assert again["split"] == "all" and again["word_accuracy"] > 0.8


def test_a_head_json_claiming_an_ensemble_of_row_heads_is_refused(seq_cache, tmp_path):  # noqa: F811
    fit(str(seq_cache), "first_letter", tmp_path / "head", head="linear", epochs=1, device="cpu")
    path = tmp_path / "head" / "head.json"
    meta = json.loads(path.read_text())
    meta["head"]["ensemble"] = 2
    path.write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match="head.ensemble needs a sequence head"):
        load_head(tmp_path / "head")


def test_member_k_is_the_head_that_seed_plus_k_trains(seq_cache, tmp_path):  # noqa: F811
    settings = FAST | {"head": "bilstm", "epochs": 3, "dropout": 0.2}  # dropout draws seeds too
    fit(str(seq_cache), "first_letter", tmp_path / "pair", ensemble=2, seed=5, **settings)
    fit(str(seq_cache), "first_letter", tmp_path / "second", seed=6, **settings)
    pair = load_file(tmp_path / "pair" / "head.safetensors")
    alone = load_file(tmp_path / "second" / "head.safetensors")
    assert pair.keys() == {f"members.{k}.{name}" for k in (0, 1) for name in alone}
    assert all(torch.equal(pair[f"members.1.{name}"], alone[name]) for name in alone)
    assert not torch.equal(pair["members.0.skip.weight"], alone["skip.weight"])
    with open(tmp_path / "pair" / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert [(row["member"], row["epoch"]) for row in history] == [
        ("1", "1"), ("1", "2"), ("1", "3"), ("2", "1"), ("2", "2"), ("2", "3")]
    with open(tmp_path / "second" / "history.csv") as f:
        assert [row for row in history if row.pop("member") == "2"] == list(csv.DictReader(f))


def test_on_a_dev_split_each_member_keeps_its_best_epoch(tiny_model, tmp_path):
    from pipeline import api

    splits = {}
    for name, sentences in {"train": SENTENCES * 6, "dev": SENTENCES[:2],
                            "test": SENTENCES[1:3]}.items():
        (tmp_path / f"{name}.conllu").write_text(conllu_text(sentences))
        splits[name] = str(tmp_path / f"{name}.conllu")
    api.embed(None, tmp_path / "cache", model=tiny_model, format="conllu", splits=splits,
              progress=False)
    records = []
    metrics = fit(str(tmp_path / "cache"), "upos", tmp_path / "head", head="bilstm",
                  ensemble=3, on_epoch=records.append, **FAST | {"epochs": 4})
    members = metrics["dev"]["members"]
    assert [m["seed"] for m in members] == [0, 1, 2]
    assert all(1 <= m["best_epoch"] <= 4 and 0 <= m["word_accuracy"] <= 1 for m in members)
    assert 0 <= metrics["dev"]["word_accuracy"] <= 1
    assert {r["member"] for r in records} == {1, 2, 3}
    saved = json.loads((tmp_path / "head" / "head.json").read_text())
    assert saved["fit"]["best_epoch"] == [m["best_epoch"] for m in members]


def test_sweep_refuses_an_ensemble(seq_cache, tmp_path):  # noqa: F811
    with pytest.raises(PipelineError, match="ensemble: sweep trains one head per layer"):
        sweep(str(seq_cache), "first_letter", tmp_path / "sweep", head="bilstm", ensemble=2,
              **FAST)
    assert not (tmp_path / "sweep").exists()


def test_an_ensembles_layer_weights_are_its_members_mean():
    torch.manual_seed(0)
    module = build_head(HeadConfig("bilstm", 8, 5, hidden=4, depth=1, mix_layers=2, ensemble=3))
    with torch.no_grad():
        for member in module.members:
            member.mix.weights.normal_()
    mean = torch.stack([m.mix.weights.softmax(0) for m in module.members]).mean(0)
    assert mix_weights(module) == [round(w, 6) for w in mean.tolist()]
    assert mix_weights(module) != mix_weights(module.members[0])
