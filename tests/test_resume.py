"""Resume after a crash: complete shards kept, temp files discarded, the result identical to an
uninterrupted run; a lock refuses a second writer; `pipeline verify` names bad shards."""

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bench.kill_resume import flip_byte
from pipeline.embedding import batching, forward
from pipeline.cli import main
from pipeline.embedding import embed
from pipeline.store import CacheError, CacheLock, CacheWriter, sha256_file, verify

PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def values_bytes(values: np.ndarray) -> bytes:
    """Raw bytes of numbers; the strings themselves (not object pointers) of text datasets."""
    return b"\0".join(values.tolist()) if values.dtype == object else values.tobytes()


def arrays(cache_dir: Path) -> dict[str, bytes]:
    """Every dataset of every shard, as raw bytes."""
    out = {}
    for path in sorted(cache_dir.glob("shards/*.h5")):
        with h5py.File(path) as f:
            f.visititems(lambda name, obj: out.__setitem__(f"{path.name}/{name}",
                                                           values_bytes(np.asarray(obj[()])))
                         if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture
def reference(tiny_model, small_corpus, tmp_path):
    embed(str(small_corpus), tmp_path / "ref", model=tiny_model, shard_tokens=300, progress=False)
    return tmp_path / "ref"


@pytest.mark.parametrize("shards_per_group, crash_after", [(1, 2), (2, 3)])
def test_crash_mid_run_resumes_to_identical_arrays(tiny_model, small_corpus, tmp_path,
                                                   monkeypatch, shards_per_group, crash_after):
    """Shards are embedded in groups; a resumed run re-embeds only the groups with a missing
    shard, writes only the missing shards, and every array equals an uninterrupted run's."""
    shard_bytes = 300 * 3 * 32 * 2  # shard_tokens x hidden states x width x float16
    monkeypatch.setattr(batching, "GROUP_BYTES", shards_per_group * shard_bytes)
    reference = tmp_path / "ref"
    embed(str(small_corpus), reference, model=tiny_model, shard_tokens=300, progress=False)
    out = tmp_path / "c"
    written = []
    real_write = CacheWriter.write_shard
    in_order = threading.Lock()  # the writer threads take shards in turn: no race on `written`
    killed = []

    def crash(self, index, data, first_example):
        with in_order:
            if index >= crash_after:
                if not killed:  # shards queued behind the kill never start
                    (out / "shards" / f".shard-{index:05d}.h5.half.tmp").write_bytes(
                        b"\x89HDF half")
                killed.append(index)
                raise KeyboardInterrupt  # like a kill: no cleanup code of ours runs after it
            real_write(self, index, data, first_example)
            written.append(index)

    monkeypatch.setattr(CacheWriter, "write_shard", crash)
    with pytest.raises(KeyboardInterrupt):
        embed(str(small_corpus), out, model=tiny_model, shard_tokens=300, progress=False)
    monkeypatch.setattr(CacheWriter, "write_shard", real_write)
    assert not (out / "manifest.json").exists()
    assert sorted(written) == list(range(crash_after))

    passes, writes = [], []
    real_forward = forward.forward_layers
    monkeypatch.setattr(forward, "forward_layers",
                        lambda lm, ids, *a, **k: passes.append(len(ids)) or real_forward(lm, ids, *a, **k))
    monkeypatch.setattr(CacheWriter, "write_shard",
                        lambda self, index, *a: writes.append(index) or real_write(self, index, *a))
    manifest = embed(str(small_corpus), out, model=tiny_model, shard_tokens=300, progress=False)
    assert manifest["stats"]["temp_files_removed"] == 1
    assert list(out.rglob("*.tmp")) == []
    first_group_to_redo = crash_after // shards_per_group * shards_per_group
    assert sum(passes) == sum(s["n_examples"] for s in manifest["shards"][first_group_to_redo:])
    assert writes == list(range(crash_after, len(manifest["shards"])))
    assert arrays(out) == arrays(reference)
    again = embed(str(small_corpus), reference, model=tiny_model, shard_tokens=300,
                  progress=False)
    assert manifest["shards"] == again["shards"]
    assert [sha256_file(out / "shards" / s["name"]) for s in manifest["shards"]] == \
        [sha256_file(reference / "shards" / s["name"]) for s in again["shards"]]


def test_sigkilled_embed_resumes(tiny_model, tmp_path, reference, small_corpus):
    """A real SIGKILL of the CLI while it writes shards; the lock dies with the process."""
    corpus = tmp_path / "big.txt"
    corpus.write_text("\n".join(f"Call me Ishmael {i}. The quick brown fox jumped over the lazy "
                                f"dog, some years ago." for i in range(400)) + "\n")
    out = tmp_path / "k"
    command = [PIPELINE, "embed", str(corpus), "--out", str(out), "--model", tiny_model,
               "--shard-tokens", "1000", "--max-tokens", "256"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(list(out.glob("shards/*.h5"))) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished:
    assert not (out / "manifest.json").exists()  # the kill landed before the manifest
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    embed(str(corpus), tmp_path / "k-ref", model=tiny_model, shard_tokens=1000, max_tokens=256,
          progress=False)
    assert arrays(out) == arrays(tmp_path / "k-ref")
    assert all(not problems for _, problems in verify(out))


def test_second_writer_is_refused_while_the_first_holds_the_lock(tiny_model, small_corpus,
                                                                 tmp_path):
    lock = CacheLock(tmp_path / "c")
    with pytest.raises(CacheError, match=r"being written by pid \d+ on .*; wait for it"):
        embed(str(small_corpus), tmp_path / "c", model=tiny_model, progress=False)
    lock.release()
    embed(str(small_corpus), tmp_path / "c", model=tiny_model, progress=False)
    CacheLock(tmp_path / "c").release()  # released again after a finished run


def test_corrupt_shard_is_re_embedded_on_resume(tiny_model, small_corpus, reference, monkeypatch):
    flip_byte(reference / "shards" / "shard-00001.h5", "hidden/2")
    passes, writes = [], []
    real_forward, real_write = forward.forward_layers, CacheWriter.write_shard
    monkeypatch.setattr(forward, "forward_layers",
                        lambda lm, ids, *a, **k: passes.append(len(ids)) or real_forward(lm, ids, *a, **k))
    monkeypatch.setattr(CacheWriter, "write_shard",
                        lambda self, index, *a: writes.append(index) or real_write(self, index, *a))
    manifest = embed(str(small_corpus), reference, model=tiny_model, shard_tokens=300,
                     progress=False)
    group = next(g for g in batching.plan_groups(len(manifest["shards"]), 300 * 3 * 32 * 2)
                 if 1 in g)
    assert sum(passes) == sum(manifest["shards"][i]["n_examples"] for i in group)
    assert writes == [1]
    assert all(not problems for _, problems in verify(reference))


def test_verify_names_the_bad_shard(reference):
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(reference)])
    assert result.exit_code == 0, result.output
    assert "all" in result.output.splitlines()[-1] and "intact" in result.output
    flip_byte(reference / "shards" / "shard-00002.h5", "hidden/0")
    result = runner.invoke(main, ["verify", str(reference)])
    assert result.exit_code == 1
    bad = [line for line in result.output.splitlines() if line.startswith("BAD")]
    assert bad == ["BAD shards/shard-00002.h5: hidden/0 does not match its checksum (corrupt)"]
    assert result.output.splitlines()[-1].startswith("Error: 1 bad file(s)")


def test_verify_checks_shapes_and_token_counts(reference):
    path = reference / "shards" / "shard-00000.h5"
    shutil.copy(reference / "shards" / "shard-00001.h5", path)  # a shard of other examples
    [(name, problems)] = [r for r in verify(reference) if r[0] == "shards/shard-00000.h5"]
    assert problems and any(word in problems[0] for word in ("bytes", "checksum", "holds"))
