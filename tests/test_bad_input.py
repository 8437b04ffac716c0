"""The bad-input table: each row is a command that must fail with exit code 1, one line
naming the problem and what to do, and no file a later run would trust."""

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from bench.kill_resume import flip_byte
from pipeline.cli import main
from pipeline.store import DIGEST, array_digest
from pipeline.store import CacheLock

LINES = ["Call me Ishmael. Some years ago, never mind how long precisely!",
         "The quick brown fox jumped over the lazy dog."] * 20


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory):
    """A finished cache of the tiny model and a head trained on it."""
    root = tmp_path_factory.mktemp("built")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(LINES) + "\n")
    runner = CliRunner()
    result = runner.invoke(main, ["embed", str(corpus), "--out", str(root / "cache"), "--model",
                                  tiny_model, "--shard-tokens", "300"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["fit", str(root / "cache"), "--out", str(root / "head"),
                                  "--epochs", "1"])
    assert result.exit_code == 0, result.output
    return root


def trusted_files(out: Path) -> list[str]:
    """Files a later run would take as finished work: a manifest, or shards."""
    return sorted(p.name for p in [out / "manifest.json", *out.glob("shards/*.h5")] if p.exists())


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# row -> (args given {tmp}, {cache}, {head}, {model}, {other}; setup(tmp); expected message)
ROWS = {
    "missing corpus": (["embed", "{tmp}/nowhere.txt", "--out", "{tmp}/out", "--model", "{model}"],
                       None, "nowhere.txt: corpus file not found"),
    "undecodable bytes": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}"],
                          lambda tmp: write(tmp / "c.txt", b"fine\nna\xefve\n"),
                          "line 2, byte offset 7: byte 0xef is not valid utf-8"),
    "binary file": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}"],
                    lambda tmp: write(tmp / "c.txt", b"\x7fELF\x00\x00\x01"),
                    "looks like a binary file"),
    "empty corpus": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}"],
                     lambda tmp: write(tmp / "c.txt", b""), "corpus is empty; nothing to embed"),
    "only blank lines": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}"],
                         lambda tmp: write(tmp / "c.txt", b"\n  \r\n\t\n"),
                         "corpus has only blank lines"),
    "malformed CoNLL-U": (["embed", "{tmp}/c.conllu", "--out", "{tmp}/out", "--model", "{model}",
                           "--format", "conllu"],
                          lambda tmp: write(tmp / "c.conllu", b"1\tCall\tcall\tVERB\n\n"),
                          "line 1: expected 10 tab-separated CoNLL-U columns"),
    "unknown model path": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model",
                            "{tmp}/no-such-model"],
                           lambda tmp: write(tmp / "c.txt", b"the sea\n"), "cannot load model"),
    "layer out of range": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}",
                            "--layers", "7"],
                           lambda tmp: write(tmp / "c.txt", b"the sea\n"),
                           "layer 7 out of range: the model has hidden states 0..2"),
    "stride out of range": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}",
                             "--stride", "100"],
                            lambda tmp: write(tmp / "c.txt", b"the sea\n"),
                            "--stride 100 out of range"),
    "unknown task": (["fit", "{cache}", "--out", "{tmp}/head", "--task", "nope"], None,
                     "unknown task 'nope'"),
    "head/cache fingerprint mismatch": (["evaluate", "{head}", "{tmp}/other"],
                                        "other-cache", "fingerprint mismatch"),
    "shard truncated": (["fit", "{tmp}/cache", "--out", "{tmp}/head"], "truncate",
                        "shard-00001.h5: 1,000 bytes, the manifest says"),
    "shard bit-flipped (fit)": (["fit", "{tmp}/cache", "--out", "{tmp}/head"], "flip",
                                "shard-00001.h5: hidden/1 does not match its checksum"),
    "shard bit-flipped (verify)": (["verify", "{tmp}/cache"], "flip",
                                   "1 bad file(s) in {tmp}/cache: shards/shard-00001.h5"),
    "concurrent writer": (["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}"],
                          "locked", "is being written by pid"),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_fails_with_one_clear_line(row, built, tiny_model, other_tiny_model, tmp_path,
                                             monkeypatch):
    args, setup, message = ROWS[row]
    lock = None
    if callable(setup):
        setup(tmp_path)
    elif setup in ("truncate", "flip"):
        shutil.copytree(built / "cache", tmp_path / "cache")
        shard = tmp_path / "cache" / "shards" / "shard-00001.h5"
        if setup == "truncate":
            shard.write_bytes(shard.read_bytes()[:1000])
        else:
            flip_byte(shard, "hidden/1")
    elif setup == "other-cache":
        write(tmp_path / "c.txt", b"the sea\n")
        result = CliRunner().invoke(main, ["embed", str(tmp_path / "c.txt"), "--out",
                                           str(tmp_path / "other"), "--model", other_tiny_model])
        assert result.exit_code == 0, result.output
    elif setup == "locked":
        write(tmp_path / "c.txt", b"the sea\n")
        lock = CacheLock(tmp_path / "out")
    values = {"tmp": tmp_path, "cache": built / "cache", "head": built / "head",
              "model": tiny_model}
    try:
        result = CliRunner().invoke(main, [a.format(**values) for a in args])
    finally:
        if lock is not None:
            lock.release()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message.format(**values) in lines[-1], lines
    assert len(lines) == 1 or args[0] == "verify"  # verify lists every file before its verdict
    assert trusted_files(tmp_path / "out") == []
    assert trusted_files(tmp_path / "head") == [] and not (tmp_path / "head" / "head.json").exists()


def test_model_without_fast_tokenizer(tiny_model, tmp_path, monkeypatch):
    import transformers

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: SlowTokenizer())
    write(tmp_path / "c.txt", b"the sea\n")
    result = CliRunner().invoke(main, ["embed", str(tmp_path / "c.txt"), "--out",
                                       str(tmp_path / "out"), "--model", tiny_model])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [
        f"Error: model {tiny_model!r} has no fast tokenizer; word alignment needs one"]
    assert trusted_files(tmp_path / "out") == []


def test_disk_full_during_embed_leaves_nothing_trusted(built, tiny_model, tmp_path, monkeypatch):
    corpus = built / "corpus.txt"
    real = h5py.Group.create_dataset

    def fill_up(self, name, *args, **kwargs):
        if ".shard-00001.h5." in self.file.filename:  # the second shard's temp file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fill_up)
    result = CliRunner().invoke(main, ["embed", str(corpus), "--out", str(tmp_path / "out"),
                                       "--model", tiny_model, "--shard-tokens", "300"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    error = result.output.strip().split("Error: ")[-1]  # after the progress bar
    assert error.startswith("disk full while writing ") and "free space" in error
    assert len(error.splitlines()) == 1
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()
    assert list(out.rglob("*.tmp")) == []
    # the writer threads may finish other shards of the group; each one there is complete
    names = sorted(p.name for p in out.glob("shards/*.h5"))
    assert "shard-00000.h5" in names and "shard-00001.h5" not in names
    for name in names:
        with h5py.File(out / "shards" / name, "r") as f:
            datasets = []
            f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset)
                         else None)
            assert datasets and all(array_digest(d[()]) == d.attrs[DIGEST] for d in datasets)

    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    result = CliRunner().invoke(main, ["embed", str(corpus), "--out", str(out), "--model",
                                       tiny_model, "--shard-tokens", "300"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0


def test_params_yaml_with_unknown_key(tmp_path):
    (tmp_path / "params.yaml").write_text("embed:\n  model: x\n  layer: 3\n")
    write(tmp_path / "c.txt", b"the sea\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.stages", "embed", "c.txt", "cache"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line == "Error: embed: params.yaml: embed.layer: unknown key"
    assert not (tmp_path / "cache").exists()


def test_missing_corpus_offline_says_where_to_put_it(tmp_path, monkeypatch):
    import urllib.request

    from pipeline import stages

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("corpus:\n  url: https://example.org/c.txt\n")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as exit_info:
        stages.main(["corpus", "data/c.txt"])
    [line] = str(exit_info.value.code).splitlines()
    assert line.startswith("Error: corpus: cannot download https://example.org/c.txt")
    assert line.endswith("offline, place the file at data/c.txt")
    assert not (tmp_path / "data" / "c.txt").exists()
