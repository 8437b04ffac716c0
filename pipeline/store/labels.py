"""Label sets: one file per task, labels/<task>.<digest12>.h5, with one dataset per shard.

Each dataset (named after its shard) holds (shard n_tokens,) int16 labels: an index into the
task's label names, or IGNORE (-100). A new label set goes to a fresh content-addressed file;
only then, under the cache lock, does the manifest entry switch to it, and only after that is
the previous file removed. A kill at any moment leaves the old complete set or the new one.

On read a label file is checked against the manifest's sha256 of it, its owner (the cache's
fingerprint_id in the file's attributes) and the range of its values.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np

from pipeline.store.files import atomic_write_h5, remove_temp_files, sha256_file
from pipeline.store.layout import IGNORE, LABEL_WAIT, LABELS, MAX_LABELS, CacheError
from pipeline.store.lock import CacheLock
from pipeline.store.manifest import TASK_NAME as TASK_NAME_PATTERN, update_manifest

TASK_NAME = re.compile(TASK_NAME_PATTERN)  # a file name part, never a path
LABEL_FILE = re.compile(rf"{TASK_NAME_PATTERN}\.[0-9a-f]{{12}}\.h5")


class LabelProblem(Exception):
    """Why a label file cannot be used, as a short phrase (internal to this module)."""


def check_task_name(task: str) -> None:
    if not isinstance(task, str) or not TASK_NAME.fullmatch(task):
        raise CacheError(f"task name {task!r}: use 1-64 letters, digits, '_', '.' or '-', "
                         f"starting with a letter or digit")


def label_file_name(task: str, digest: str) -> str:
    return f"{task}.{digest[:12]}.h5"


def labels_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / LABELS


def check_values(task: str, label_names: list[str], per_shard: list[np.ndarray],
                 shards: list[dict]) -> list[np.ndarray]:
    """(shard n_tokens,) int16 labels per shard; wrong lengths or values are a CacheError."""
    if not isinstance(label_names, list) or not all(isinstance(n, str) for n in label_names):
        raise CacheError(f"labels for task {task!r}: label names must be a list of strings")
    if len(label_names) > MAX_LABELS:
        raise CacheError(f"labels for task {task!r}: {len(label_names):,} label names, more than "
                         f"the {MAX_LABELS:,} a task can store")
    checked = []
    for shard, labels in zip(shards, per_shard, strict=True):
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise CacheError(f"labels for task {task!r}: integers expected, got {labels.dtype}")
        if labels.shape != (shard["n_tokens"],):
            raise CacheError(f"labels for {shard['name']}: {len(labels)} rows, shard has "
                             f"{shard['n_tokens']} tokens")
        bad = _out_of_range(labels, len(label_names))
        if bad is not None:
            raise CacheError(f"labels for task {task!r}: value {bad} is neither {IGNORE} nor "
                             f"a label index below {len(label_names)}")
        checked.append(labels.astype(np.int16))
    return checked


def write_labels(cache_dir: str | Path, manifest: dict, task: str, label_names: list[str],
                 per_shard: list[np.ndarray], meta: dict | None = None) -> dict:
    """Add or replace one task's label set in the cache `manifest` describes; returns the
    manifest as written. Waits up to LABEL_WAIT seconds for another writer to finish."""
    check_task_name(task)
    shards, owner = manifest["shards"], manifest["fingerprint_id"]
    arrays = check_values(task, label_names, per_shard, shards)
    digest = hashlib.sha256(json.dumps([owner, task, label_names]).encode())
    for labels in arrays:
        digest.update(labels.tobytes())
    name = label_file_name(task, digest.hexdigest())
    path = labels_dir(cache_dir) / name

    def fill(f: h5py.File) -> None:
        f.attrs["fingerprint"] = owner
        f.attrs["task"] = task
        for shard, labels in zip(shards, arrays):
            f.create_dataset(shard["name"], data=labels)

    previous = {}

    def point_to_new_file(current: dict) -> dict:
        if current["fingerprint_id"] != owner or _layout(current) != _layout(manifest):
            raise CacheError(f"{cache_dir} was embedded again from other inputs while task "
                             f"{task!r} was labelled; label it again")
        previous.update(current["tasks"].get(task, {}))
        current["tasks"][task] = {**(meta or {}), "label_names": label_names, "file": name,
                                  "sha256": sha256_file(path)}
        return current

    with CacheLock(cache_dir, wait=LABEL_WAIT) as lock:
        # every writer of the cache holds this lock: a temp file now is a killed run's
        remove_temp_files(cache_dir)
        remove_temp_files(labels_dir(cache_dir))
        atomic_write_h5(path, fill)
        written = update_manifest(cache_dir, point_to_new_file, lock=lock)
        prune_label_files(cache_dir, written)  # the previous set, and a killed run's new one
    return written


def prune_label_files(cache_dir: str | Path, manifest: dict) -> int:
    """Under the cache lock: remove the label files (<task>.<digest>.h5) the manifest does not
    name: sets replaced, dropped, or written by a run killed before it switched the
    manifest to them."""
    named = {file_name(task, entry) for task, entry in manifest.get("tasks", {}).items()}
    removed = 0
    for path in labels_dir(cache_dir).glob("*.h5"):
        if path.name not in named and LABEL_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def read_labels(cache_dir: str | Path, manifest: dict, task: str) -> list[np.ndarray]:
    """Per shard (shard n_tokens,) int16 labels of `task`, after every check; a failed
    check is a one-line CacheError naming the file."""
    entry = manifest["tasks"][task]
    try:
        return _checked_arrays(cache_dir, task, entry, manifest["fingerprint_id"],
                               manifest["shards"])
    except LabelProblem as problem:
        raise CacheError(f"{label_path(cache_dir, task, entry)}: {problem}; run `pipeline label "
                         f"--task {task}` (or `pipeline embed`) again to rewrite it") from None


def label_problems(cache_dir: str | Path, task: str, entry: dict, fingerprint_id: str,
                   shards: list[dict]) -> list[str]:
    """What is wrong with one task's label file, as short phrases; [] when it is intact."""
    try:
        _checked_arrays(cache_dir, task, entry, fingerprint_id, shards)
        return []
    except LabelProblem as problem:
        return [str(problem)]


def kept_tasks(cache_dir: str | Path, old: dict | None, fingerprint_id: str,
               shards: list[dict]) -> dict:
    """The task entries of an earlier manifest whose label files fit these shards and verify:
    embedding again with the same inputs keeps every label set added since."""
    tasks = (old or {}).get("tasks")
    if not isinstance(tasks, dict):
        return {}
    return {task: entry for task, entry in tasks.items()
            if isinstance(entry, dict)
            and not label_problems(cache_dir, task, entry, fingerprint_id, shards)}


def file_name(task: str, entry: dict) -> str | None:
    """The manifest entry's label file name when it is <task>.<12 hex digits>.h5, else None."""
    name = entry.get("file")
    pattern = rf"{re.escape(task)}\.[0-9a-f]{{12}}\.h5"
    valid = TASK_NAME.fullmatch(task) and isinstance(name, str) and re.fullmatch(pattern, name)
    return name if valid else None


def label_path(cache_dir: str | Path, task: str, entry: dict) -> Path:
    """Where a task's label file is (for an entry naming none, the path messages show)."""
    return labels_dir(cache_dir) / (file_name(task, entry) or f"{task}.h5")


def _checked_arrays(cache_dir, task: str, entry: dict, fingerprint_id: str,
                    shards: list[dict]) -> list[np.ndarray]:
    label_names, sha256 = entry.get("label_names"), entry.get("sha256")
    if file_name(task, entry) is None:
        raise LabelProblem("the manifest names no label file of the form <task>.<digest>.h5")
    if not isinstance(label_names, list) or not isinstance(sha256, str):
        raise LabelProblem("the manifest entry lacks its label names or sha256")
    path = label_path(cache_dir, task, entry)
    if not path.exists():
        raise LabelProblem("missing")
    if sha256_file(path) != sha256:
        raise LabelProblem("file checksum differs from the manifest (corrupt or replaced)")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("fingerprint") != fingerprint_id:
                raise LabelProblem("belongs to another cache (fingerprint differs)")
            arrays = [_shard_labels(f, shard) for shard in shards]
    except OSError as err:
        raise LabelProblem(f"unreadable ({(str(err).splitlines() or ['?'])[0]})") from None
    for shard, labels in zip(shards, arrays):
        bad = _out_of_range(labels, len(label_names))
        if bad is not None:
            raise LabelProblem(f"{shard['name']}: value {bad} is neither {IGNORE} nor a label "
                               f"index below {len(label_names)}")
    return arrays


def _shard_labels(f: h5py.File, shard: dict) -> np.ndarray:
    if shard["name"] not in f:
        raise LabelProblem(f"no labels for {shard['name']}")
    dataset = f[shard["name"]]
    if dataset.shape != (shard["n_tokens"],) or dataset.dtype != np.int16:
        raise LabelProblem(f"{shard['name']}: {dataset.shape} {dataset.dtype}, expected "
                           f"({shard['n_tokens']},) int16")
    return dataset[()]


def _out_of_range(labels: np.ndarray, n_labels: int):
    """The first value that is neither IGNORE nor in [0, n_labels), or None."""
    bad = (labels != IGNORE) & ((labels < 0) | (labels >= n_labels))
    return labels[bad][0].item() if bad.any() else None


def _layout(manifest: dict) -> list[tuple[str, int]]:
    return [(s["name"], s["n_tokens"]) for s in manifest["shards"]]
