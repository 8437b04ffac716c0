"""dvc.yaml cannot go stale: every stage depends on each module of ours that it imports.

Each stage is run for real on tiny inputs in a subprocess that records the modules it
loaded; every `pipeline` module among them must be covered by one of the stage's deps.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_labelled import conllu_text, SENTENCES

ROOT = Path(__file__).resolve().parents[1]
RECORD = ("import atexit, json, runpy, sys\n"
          "record = sys.argv.pop()\n"
          "atexit.register(lambda: open(record, 'w').write(json.dumps(sorted(\n"
          "    m.__file__ for m in list(sys.modules.values())\n"
          "    if getattr(m, '__file__', None) and m.__name__.split('.')[0] == 'pipeline'))))\n"
          "runpy.run_module('pipeline.stages', run_name='__main__', alter_sys=True)\n")


def stage_deps(name: str) -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    stage = stages[name]
    return [d for d in stage.get("do", stage).get("deps", []) if d.startswith("pipeline")]


def run_stage(workdir: Path, *args: str) -> list[Path]:
    record = workdir / "modules.json"
    done = subprocess.run([sys.executable, "-c", RECORD, *args, str(record)], cwd=workdir,
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                               "HF_HUB_OFFLINE": "1", "HOME": str(workdir)})
    assert done.returncode == 0, done.stderr[-2000:]
    return [Path(f).resolve() for f in json.loads(record.read_text())]


def assert_covered(modules: list[Path], deps: list[str], stage: str) -> None:
    covered = [(ROOT / d).resolve() for d in deps]
    missing = sorted(str(m.relative_to(ROOT)) for m in modules
                     if not any(m == c or c in m.parents for c in covered))
    assert not missing, f"dvc.yaml stage {stage} imports but does not depend on {missing}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model):
    work = tmp_path_factory.mktemp("dvc")
    (work / "data" / "moby-dick").mkdir(parents=True)
    lines = ["Call me Ishmael.", "The quick brown fox jumped over the lazy dog."] * 30
    (work / "data" / "moby-dick" / "pg2701.txt").write_text("\n".join(lines) + "\n")
    ewt = work / "data" / "ewt"
    ewt.mkdir()
    for split in ("train", "dev", "test"):
        (ewt / f"{split}.conllu").write_text(conllu_text(SENTENCES * 3))
    (work / "params.yaml").write_text(yaml.safe_dump({
        "corpus": {"url": "https://example.org/corpus.txt"},
        "embed": {"model": tiny_model},
        "ewt_corpus": {"base_url": "https://example.org/", "train": "data/ewt/train.conllu",
                       "dev": "data/ewt/dev.conllu", "test": "data/ewt/test.conllu"},
        "ewt_embed": {"model": tiny_model, "format": "conllu"},
        "heads": {"moby": {"cache": "data/cache", "epochs": 1},
                  "ewt_bilstm": {"cache": "data/ewt-cache", "task": "upos", "head": "bilstm",
                                 "crf": True, "chars": True, "epochs": 1}},
    }))
    return work


def test_corpus_stages_depend_on_what_they_import(workdir):
    modules = run_stage(workdir, "corpus", "data/moby-dick/pg2701.txt")
    assert_covered(modules, stage_deps("corpus"), "corpus")
    modules = run_stage(workdir, "split_corpus", "ewt_corpus")
    assert_covered(modules, stage_deps("ewt_corpus"), "ewt_corpus")


def test_embed_and_fit_stages_depend_on_what_they_import(workdir):
    modules = run_stage(workdir, "embed", "data/moby-dick/pg2701.txt", "data/cache")
    assert_covered(modules, stage_deps("embed"), "embed")
    assert not any("training" in m.parts for m in modules)  # deps stay exact: no head code
    modules = run_stage(workdir, "embed_splits", "data/ewt-cache", "ewt_embed", "ewt_corpus")
    assert_covered(modules, stage_deps("ewt_embed"), "ewt_embed")
    for head in ("moby", "ewt_bilstm"):  # a row head and a sequence head
        modules = run_stage(workdir, "fit", head)
        assert_covered(modules, stage_deps("fit"), f"fit@{head}")
        assert not any(m.parent.name == "embedding" for m in modules)  # training never loads it
        assert (workdir / "data" / "live" / head / "metrics.json").exists()


def test_fit_stages_are_one_foreach_over_params_heads():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["fit"]["foreach"] == "${heads}"
    heads = yaml.safe_load((ROOT / "params.yaml").read_text())["heads"]
    assert {"moby_linear", "moby_mlp", "moby_bilstm", "ewt_linear", "ewt_bilstm"} <= set(heads)
