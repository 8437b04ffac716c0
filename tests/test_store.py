"""The store on its own (no model): locked manifest updates, checked label sets, vocab checksum,
re-embed keeping labels, write errors that surface, symlinks, umask, and checked JSON."""

import errno
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.kill_resume import flip_byte
from pipeline.store import (Cache, CacheError, CacheLock, CacheWriter, ShardData, atomic_write,
                            atomic_write_h5, atomic_write_json, read_json, remove_temp_files,
                            sha256_file, update_manifest, verify)
from pipeline.store import files as store_files
from pipeline.store import labels as store_labels

SHARD_TOKENS = (5, 7, 4)
NAMES = ["no", "yes", "maybe"]


def fingerprint(seed: int = 0) -> dict:
    return {"format_version": 2, "layers": [0, 1], "model": {"name": f"m{seed}"},
            "storage_dtype": "float16", "compute_dtype": "float32",
            "corpus": {"sha256": "0" * 64, "format": "text"}}


def make_cache(path: Path, seed: int = 0) -> dict:
    """A finished 3-shard cache of random arrays, 2 examples per shard; returns its manifest."""
    rng = np.random.default_rng(seed)
    with CacheWriter(path, fingerprint(seed)) as writer:
        for index, n in enumerate(SHARD_TOKENS):
            writer.write_shard(index, ShardData(
                hidden={layer: rng.standard_normal((n, 4)).astype(np.float16) for layer in (0, 1)},
                input_ids=rng.integers(0, 5, n, dtype=np.int32),
                word_ids=np.arange(n, dtype=np.int32),
                example_ids=np.full(n, 2 * index, dtype=np.int32),
                char_spans=np.zeros((n, 2), dtype=np.int32),
                texts=["a b", "c d"]), 2 * index)
        return writer.finish(len(SHARD_TOKENS), ["[CLS]", "a", "b", "c", "d"],
                             {"hidden_size": 4})


def labels(value: int) -> list[np.ndarray]:
    return [np.full(n, value, dtype=np.int16) for n in SHARD_TOKENS]


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    make_cache(tmp_path / "c")
    return tmp_path / "c"


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# 1. one locked write path


def test_label_writers_with_stale_manifests_keep_each_others_tasks(cache_dir):
    first, second = Cache(cache_dir), Cache(cache_dir)  # both read the manifest before writing
    first.write_labels("x", NAMES, labels(1))
    second.write_labels("y", NAMES, labels(2))
    cache = Cache(cache_dir)
    assert sorted(cache.manifest["tasks"]) == ["x", "y"]
    assert (cache.read_labels("x") == 1).all() and (cache.read_labels("y") == 2).all()


def test_three_concurrent_label_writers_all_survive(cache_dir):
    start = threading.Barrier(3)
    errors = []

    def write(task: str, value: int) -> None:
        try:
            cache = Cache(cache_dir)
            start.wait()
            for round_ in range(4):
                cache.write_labels(task, NAMES, labels((value + round_) % 3))
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(task, i)) for i, task in
               enumerate(["a", "b", "c"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    cache = Cache(cache_dir)
    assert sorted(cache.manifest["tasks"]) == ["a", "b", "c"]
    for i, task in enumerate(["a", "b", "c"]):
        assert (cache.read_labels(task) == (i + 3) % 3).all()
    # every replaced label file was removed: one file per task remains
    assert sorted(p.name.split(".")[0] for p in (cache_dir / "labels").glob("*.h5")) == \
        ["a", "b", "c"]


def test_label_writer_waits_for_the_lock(cache_dir):
    lock = CacheLock(cache_dir)
    done = []
    writer = threading.Thread(target=lambda: done.append(
        Cache(cache_dir).write_labels("x", NAMES, labels(1))))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and "x" not in read_json(cache_dir / "manifest.json")["tasks"]
    lock.release()
    writer.join()
    assert done == [None] and (Cache(cache_dir).read_labels("x") == 1).all()


def test_label_writer_gives_up_after_its_wait(cache_dir, monkeypatch):
    monkeypatch.setattr(store_labels, "LABEL_WAIT", 0.2)
    with CacheLock(cache_dir):
        with pytest.raises(CacheError, match=r"being written by pid \d+ .*waited 0.2 s") as err:
            Cache(cache_dir).write_labels("x", NAMES, labels(1))
    one_line(err)


def test_embed_lock_still_fails_fast(cache_dir):
    with CacheLock(cache_dir):
        with pytest.raises(CacheError, match="being written by"):
            CacheLock(cache_dir)


def test_update_manifest_applies_the_change_to_the_current_manifest(cache_dir):
    stale = Cache(cache_dir)
    Cache(cache_dir).write_labels("x", NAMES, labels(1))
    update_manifest(cache_dir, lambda m: m | {"note": "added"})
    manifest = read_json(cache_dir / "manifest.json")
    assert manifest["note"] == "added" and "x" in manifest["tasks"]
    assert "x" not in stale.manifest["tasks"]


def kill_when(monkeypatch, function, module, when):
    """Replace module.function by one that raises KeyboardInterrupt (like a kill) when
    `when(*args)` holds, and calls the real one otherwise."""
    real = getattr(module, function)

    def fake(*args, **kwargs):
        if when(*args):
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(module, function, fake)


def test_kill_before_the_manifest_switches_keeps_the_old_label_set(cache_dir, monkeypatch):
    Cache(cache_dir).write_labels("x", NAMES, labels(1))
    kill_when(monkeypatch, "replace", os, lambda src, dst: Path(dst).name == "manifest.json")
    with pytest.raises(KeyboardInterrupt):
        Cache(cache_dir).write_labels("x", ["other"], labels(0))
    monkeypatch.undo()
    cache = Cache(cache_dir)
    assert cache.label_names("x") == NAMES and (cache.read_labels("x") == 1).all()


def test_kill_after_the_manifest_switches_gives_the_new_label_set(cache_dir, monkeypatch):
    Cache(cache_dir).write_labels("x", NAMES, labels(1))
    kill_when(monkeypatch, "unlink", Path, lambda path, *a: path.parent.name == "labels")
    with pytest.raises(KeyboardInterrupt):
        Cache(cache_dir).write_labels("x", ["other"], labels(0))
    monkeypatch.undo()
    cache = Cache(cache_dir)
    assert cache.label_names("x") == ["other"] and (cache.read_labels("x") == 0).all()


@pytest.mark.parametrize("task", ["../evil", "a/b", "", ".hidden", "x" * 65, "a\n", "-x"])
def test_task_name_is_never_a_path(cache_dir, task):
    with pytest.raises(CacheError, match="task name") as err:
        Cache(cache_dir).write_labels(task, NAMES, labels(1))
    one_line(err)
    assert not list(cache_dir.parent.glob("*.h5")) and not list(cache_dir.glob("labels/*"))


# 2. labels checked on read


def label_file(cache_dir: Path, task: str) -> Path:
    return cache_dir / "labels" / read_json(cache_dir / "manifest.json")["tasks"][task]["file"]


def test_bit_flipped_label_file_is_a_one_line_error(cache_dir):
    Cache(cache_dir).write_labels("x", NAMES, labels(1))
    path = label_file(cache_dir, "x")
    flip_byte(path, "shard-00001.h5", at=3)
    with pytest.raises(CacheError, match="checksum") as err:
        Cache(cache_dir).read_labels("x")
    assert one_line(err).startswith(str(path))


def test_label_file_of_another_cache_is_refused(tmp_path, cache_dir):
    make_cache(tmp_path / "other", seed=1)
    Cache(cache_dir).write_labels("x", NAMES, labels(1))
    Cache(tmp_path / "other").write_labels("x", NAMES, labels(2))
    ours, theirs = label_file(cache_dir, "x"), label_file(tmp_path / "other", "x")
    shutil.copy(theirs, ours)  # copied, and its checksum "fixed" in our manifest
    update_manifest(cache_dir, lambda m: m | {"tasks": {"x": m["tasks"]["x"] | {
        "sha256": sha256_file(ours)}}})
    with pytest.raises(CacheError, match="another cache") as err:
        Cache(cache_dir).read_labels("x")
    assert one_line(err).startswith(str(ours))


@pytest.mark.parametrize("value", [3, -1, -101, 40000])
def test_label_values_out_of_range_are_refused_on_write(cache_dir, value):
    per_shard = labels(0)
    per_shard[1] = per_shard[1].astype(np.int64)
    per_shard[1][2] = value
    with pytest.raises(CacheError, match=f"value {value} is neither -100") as err:
        Cache(cache_dir).write_labels("x", NAMES, per_shard)
    one_line(err)


def test_label_values_out_of_range_are_refused_on_read(cache_dir):
    per_shard = labels(2)
    per_shard[0][0] = -100
    Cache(cache_dir).write_labels("x", NAMES, per_shard)
    assert Cache(cache_dir).read_labels("x")[0] == -100  # IGNORE is in range
    path = label_file(cache_dir, "x")
    with h5py.File(path, "r+") as f:
        f["shard-00002.h5"][1] = 3
    update_manifest(cache_dir, lambda m: m | {"tasks": {"x": m["tasks"]["x"] | {
        "sha256": sha256_file(path)}}})
    with pytest.raises(CacheError, match="value 3 is neither -100 nor a label index below 3"):
        Cache(cache_dir).read_labels("x")


# 3. vocab checksum; verify covers labels and vocab


def test_changed_vocab_is_caught_on_read_and_by_verify(cache_dir):
    assert Cache(cache_dir).vocab() == ["[CLS]", "a", "b", "c", "d"]
    (cache_dir / "vocab.json").write_text(json.dumps(["[CLS]", "a", "b", "c", "e"]))
    with pytest.raises(CacheError, match="vocab.json: differs from the manifest") as err:
        Cache(cache_dir).vocab()
    one_line(err)
    assert dict(verify(cache_dir))["vocab.json"] == ["file checksum differs from the manifest"]


def test_verify_checks_label_files(cache_dir):
    Cache(cache_dir).write_labels("x", NAMES, labels(1))
    Cache(cache_dir).write_labels("y", NAMES, labels(2))
    assert all(not problems for _, problems in verify(cache_dir))
    flip_byte(label_file(cache_dir, "y"), "shard-00000.h5", at=1)
    bad = {name: problems for name, problems in verify(cache_dir) if problems}
    assert list(bad) == [f"labels/{label_file(cache_dir, 'y').name}"]
    assert "checksum" in bad[next(iter(bad))][0]


# 4. embedding again keeps label sets


def test_finishing_again_keeps_the_label_sets_that_verify(cache_dir):
    Cache(cache_dir).write_labels("x", NAMES, labels(1))
    Cache(cache_dir).write_labels("y", NAMES, labels(2))
    flip_byte(label_file(cache_dir, "y"), "shard-00000.h5", at=1)
    make_cache(cache_dir)  # the same inputs again: a repair
    cache = Cache(cache_dir)
    assert sorted(cache.manifest["tasks"]) == ["x"] and (cache.read_labels("x") == 1).all()
    assert all(not problems for _, problems in verify(cache_dir))


def test_garbage_manifest_is_repaired_by_finishing_again(cache_dir):
    (cache_dir / "manifest.json").write_text('{"format_version": 2, "shards": [')
    with pytest.raises(CacheError, match="manifest.json: not valid JSON"):
        Cache(cache_dir)
    make_cache(cache_dir)
    assert all(not problems for _, problems in verify(cache_dir))


# 5. write errors surface


def test_failed_hdf5_flush_is_an_error_not_a_file(tmp_path, monkeypatch):
    def full(self):
        raise OSError("Can't write data (file write failed: errno = 28, error message = "
                      "'No space left on device')")
    monkeypatch.setattr(h5py.File, "flush", full)
    target = tmp_path / "d" / "x.h5"
    with pytest.raises(CacheError, match=r"^disk full while writing .*x\.h5") as err:
        atomic_write_h5(target, lambda f: f.create_dataset("v", data=np.arange(10)))
    one_line(err)
    assert list(target.parent.iterdir()) == []


def test_failed_sync_is_an_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"old": 1})

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(store_files.os, "fsync", broken)
    with pytest.raises(CacheError, match=r"cannot write .*m\.json \(.*Input/output error\)") as err:
        atomic_write_json(target, {"new": 1})
    one_line(err)
    monkeypatch.undo()
    assert read_json(target) == {"old": 1} and [p.name for p in tmp_path.iterdir()] == ["m.json"]


# 6. symlinks


def test_symlinked_lock_file_is_refused_and_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".lock").symlink_to(victim)
    with pytest.raises(CacheError, match="symbolic link") as err:
        CacheLock(tmp_path / "c")
    one_line(err)
    assert victim.read_text() == "precious\n"


def test_remove_temp_files_never_follows_or_descends(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    d = tmp_path / "d"
    d.mkdir()
    (d / ".a.h5.1.tmp").write_text("half")
    (d / ".link.tmp").symlink_to(outside)
    (d / ".dir.tmp").mkdir()
    (d / ".dir.tmp" / "inner").write_text("x")
    (d / "keep.h5").write_text("x")
    assert remove_temp_files(d) == 2
    assert sorted(p.name for p in d.iterdir()) == [".dir.tmp", "keep.h5"]
    assert (outside / "keep.txt").exists() and (d / ".dir.tmp" / "inner").exists()


# 7. umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_new_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        make_cache(tmp_path / "c")
        Cache(tmp_path / "c").write_labels("x", NAMES, labels(1))
        atomic_write(tmp_path / "head" / "head.safetensors",
                     lambda tmp: Path(tmp).write_bytes(b"h"))
    finally:
        os.umask(old)
    c = tmp_path / "c"
    files = [c / "manifest.json", c / "vocab.json", c / "shards" / "shard-00000.h5", c / ".lock",
             label_file(c, "x"), tmp_path / "head" / "head.safetensors"]
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
        {str(p): oct(mode) for p in files}


# 8. checked JSON and manifest types


@pytest.mark.parametrize("text, message", [
    ('{"a": 1', "not valid JSON"), ("", "not valid JSON"), (b"\xff\xfe{}", "not valid JSON"),
    ("[1, 2]", "expected an object at the top level, found list"),
    ("3", "expected an object at the top level, found int")])
def test_read_json_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "f.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CacheError, match=message) as err:
        read_json(path)
    assert one_line(err).startswith(str(path))


@pytest.mark.parametrize("edit, key", [
    (lambda m: m | {"format_version": "2"}, "cache format 2"),
    (lambda m: m | {"shards": {}}, "'shards' should be a list"),
    (lambda m: m | {"hidden_size": 4.0}, "'hidden_size' should be an integer"),
    (lambda m: m | {"tasks": []}, "'tasks' should be an object"),
    (lambda m: m | {"fingerprint": m["fingerprint"] | {"layers": ["0"]}},
     "'fingerprint.layers' should be a list of integers"),
    (lambda m: m | {"shards": [m["shards"][0] | {"n_tokens": "5"}] + m["shards"][1:]},
     r"'shards\[0\].n_tokens' should be an integer"),
    (lambda m: m | {"shards": m["shards"][:1] + [{k: v for k, v in m["shards"][1].items()
                                                    if k != "bytes"}] + m["shards"][2:]},
     r"'shards\[1\].bytes' missing"),
    (lambda m: m | {"shards": [m["shards"][0] | {"name": "../../x.h5"}] + m["shards"][1:]},
     r"'shards\[0\].name' is '../../x.h5', not a shard file name"),
    (lambda m: m | {"n_tokens": True}, "'n_tokens' should be an integer"),
])
def test_manifest_fields_are_type_checked(cache_dir, edit, key):
    path = cache_dir / "manifest.json"
    path.write_text(json.dumps(edit(read_json(path))))
    with pytest.raises(CacheError, match=key) as err:
        Cache(cache_dir)
    one_line(err)


def test_per_shard_reads_match_the_whole_arrays(cache_dir):
    cache = Cache(cache_dir)
    assert np.array_equal(np.concatenate([cache.read_shard_array(s, "word_ids")
                                          for s in cache.shards]), cache.read("word_ids"))
    assert cache.read_shard_texts(cache.shards[1]) == ["a b", "c d"]
    assert cache.texts() == ["a b", "c d"] * len(SHARD_TOKENS)


def rewrite_dataset(path: Path, name: str, values: np.ndarray) -> None:
    """Replace one dataset of a shard (checksum attribute recomputed, so only the branch
    under test can object)."""
    from pipeline.store import DIGEST, array_digest
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, data=values).attrs[DIGEST] = array_digest(values)


@pytest.mark.parametrize("change, problem", [
    (lambda p: rewrite_dataset(p, "hidden/0", np.zeros((7, 3), np.float16)),
     "hidden/0 has shape (7, 3), expected (7, 4)"),
    (lambda p: rewrite_dataset(p, "word_ids", np.zeros(7, np.int64)),
     "word_ids has dtype int64, expected int32"),
    (lambda p: rewrite_dataset(p, "input_ids", np.zeros((7, 1), np.int32)),
     "input_ids has shape (7, 1), expected (7,)"),
    (lambda p: h5py.File(p, "r+").__enter__().attrs.__setitem__("first_example", 4),
     "holds examples 4+2, expected 2+2"),
])
def test_shard_problems_name_shape_dtype_and_example_range(cache_dir, change, problem):
    path = cache_dir / "shards" / "shard-00001.h5"
    from pipeline.store.integrity import shard_problems
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    shard = manifest["shards"][1]
    check = (path, manifest["fingerprint_id"], shard["first_example"], shard["n_examples"],
             shard["n_tokens"], [0, 1], 4)
    assert shard_problems(*check) == []
    change(path)
    assert shard_problems(*check) == [problem]
    assert dict(verify(cache_dir))["shards/shard-00001.h5"]  # verify objects too (size first)
