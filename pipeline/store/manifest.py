"""manifest.json: reading it with every field's type checked, and the one locked way to change it.

Every write of the manifest (embed's finish, each label set) goes through `update_manifest`:
take the cache lock, re-read the manifest under it, apply the change, write it atomically. So
two writers never lose each other's changes, and a reader sees the old or the new manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.fingerprint import MODEL_KEYS
from pipeline.store.schema import Int, MapOf, Optional, Text, checked
from pipeline.store.files import atomic_write_json, read_json
from pipeline.store.layout import (FORMAT_VERSION, LABEL_WAIT, MANIFEST, SHARDS, CacheError)
from pipeline.store.lock import CacheLock

SHARD_NAME = r"shard-\d{5,}\.h5"  # a plain name: the manifest names no other path
TASK_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # a file name part, never a path
SHA256 = Text(pattern=r"[0-9a-f]{64}", what="a sha256 hex digest")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")

# what readers of a fingerprint (a cache's, or the copy a head keeps) rely on
FINGERPRINT_SPEC = {
    "model": {"name": Text(pattern=r".+", what="a model name"),
              **{key: Optional(str) for key in MODEL_KEYS}},
    "layers": [Int(min=0)],
    "storage_dtype": Text(choices=("float16",)),
    "compute_dtype": Text(choices=COMPUTE_DTYPES),
    "max_length": Optional(Int(min=1)),
    "corpus": {"sha256": str, "format": str},
}

# every field a reader of the manifest uses, with its type and range (pipeline.store.schema)
SHARD_SPEC = {"name": Text(pattern=SHARD_NAME, what="a shard file name"),
              "first_example": Int(min=0), "n_examples": Int(min=0), "n_tokens": Int(min=0),
              "bytes": Int(min=0)}
TASK_SPEC = {"label_names": [str], "file": str, "sha256": str,
             "level": Optional(Text(choices=("token", "word"))), "label_all": Optional(bool),
             "source": Optional(str)}
SPLIT_SPEC = {"first_example": Int(min=0), "n_examples": Int(min=0), "path": Optional(str)}
MANIFEST_SPEC = {
    "format_version": int,
    "fingerprint": FINGERPRINT_SPEC,
    "fingerprint_id": SHA256,
    "n_tokens": Int(min=0),
    "n_examples": Int(min=0),
    "hidden_size": Int(min=1),
    "shards": [SHARD_SPEC],
    "tasks": MapOf(TASK_SPEC, key=TASK_NAME, key_what="a task name"),
    "splits": Optional(MapOf(SPLIT_SPEC, key=TASK_NAME, key_what="a split name")),
    "stats": Optional(MapOf(float)),
    "corpus_path": Optional(str),
    "vocab_file_sha256": Optional(str),
    "settings": Optional(dict),
}
REWRITE = "run `pipeline embed` again with the same inputs to rewrite it"


def read_manifest(cache_dir: str | Path) -> dict:
    """A finished cache's manifest, every field the store relies on checked."""
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST
    if not path.exists():
        what = ("incomplete (no manifest.json; run `pipeline embed` again to finish it)"
                if (cache_dir / SHARDS).exists() else "not a cache (no manifest.json)")
        raise CacheError(f"{cache_dir}: {what}")
    manifest = read_json(path)
    check_manifest(manifest, path)
    return manifest


def check_manifest(manifest: dict, path: Path) -> None:
    """Raise a CacheError naming the first key whose value is missing, of the wrong type or
    out of range (MANIFEST_SPEC), or that disagrees with the others (counts, example ranges)."""
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or type(version) is not int:
        raise CacheError(f"{path.parent}: cache format {version}, this version reads format "
                         f"{FORMAT_VERSION}; embed again (re-embed into this folder with "
                         f"--force, or into a new one)")
    checked(manifest, MANIFEST_SPEC, path, CacheError, REWRITE)

    def wrong(problem: str):
        return CacheError(f"{path}: {problem}; {REWRITE}")

    layers = manifest["fingerprint"]["layers"]
    if not layers or len(set(layers)) != len(layers):
        raise wrong(f"key 'fingerprint.layers' should be a non-empty list of distinct layers, "
                    f"found {layers}")
    shards, first, names = manifest["shards"], 0, set()
    for i, shard in enumerate(shards):
        if shard["first_example"] != first:
            raise wrong(f"key 'shards[{i}].first_example' is {shard['first_example']}, the "
                        f"shards before it end at example {first}")
        if shard["name"] in names:
            raise wrong(f"key 'shards[{i}].name' repeats {shard['name']!r}")
        names.add(shard["name"])
        first += shard["n_examples"]
    if sum(s["n_tokens"] for s in shards) != manifest["n_tokens"]:
        raise wrong("key 'n_tokens' differs from the sum of the shards' n_tokens")
    if first != manifest["n_examples"]:
        raise wrong("key 'n_examples' differs from the sum of the shards' n_examples")
    for name, split in (manifest.get("splits") or {}).items():
        if split["first_example"] + split["n_examples"] > manifest["n_examples"]:
            raise wrong(f"key 'splits.{name}' holds examples past the cache's "
                        f"{manifest['n_examples']}")


def update_manifest(cache_dir: str | Path, change: Callable[[dict | None], dict],
                    lock: CacheLock | None = None, repair: bool = False) -> dict:
    """Under the cache lock, re-read manifest.json, write `change(manifest)`; returns it.

    `lock` is a lock the caller already holds; without one, the lock is taken here, waiting
    up to LABEL_WAIT seconds. `change` gets the checked manifest, or with `repair` (embed's
    finish) None where it is missing or unreadable, and returns the manifest to write.
    """
    cache_dir = Path(cache_dir)
    held = lock if lock is not None else CacheLock(cache_dir, wait=LABEL_WAIT)
    try:
        if repair:
            try:
                current = read_manifest(cache_dir)
            except CacheError:  # embed rewrites it from the shards, which check themselves
                current = None
        else:
            current = read_manifest(cache_dir)
        manifest = change(current)
        check_manifest(manifest, cache_dir / MANIFEST)  # never write what would not read
        atomic_write_json(cache_dir / MANIFEST, manifest)
        return manifest
    finally:
        if lock is None:
            held.release()
