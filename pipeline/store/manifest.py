"""manifest.json: reading it with every field's type checked, and the one locked way to change it.

Every write of the manifest (embed's finish, each label set) goes through `update_manifest`:
take the cache lock, re-read the manifest under it, apply the change, write it atomically. So
two writers never lose each other's changes, and a reader sees the old or the new manifest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from pipeline.store.files import atomic_write_json, read_json
from pipeline.store.layout import (FORMAT_VERSION, LABEL_WAIT, MANIFEST, SHARDS, CacheError)
from pipeline.store.lock import CacheLock

TOP_FIELDS = {"format_version": int, "fingerprint": dict, "fingerprint_id": str,
              "n_tokens": int, "n_examples": int, "hidden_size": int, "shards": list,
              "tasks": dict}
SHARD_FIELDS = {"name": str, "first_example": int, "n_examples": int, "n_tokens": int,
                "bytes": int, "sha256": str}
SHARD_NAME = re.compile(r"^shard-\d{5,}\.h5$")  # a plain name: the manifest names no other path


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
    """Raise a CacheError naming the first key whose value is missing or of the wrong type."""
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or type(version) is not int:
        raise CacheError(f"{path.parent}: cache format {version}, this version reads format "
                         f"{FORMAT_VERSION}; embed again")
    _check_fields(manifest, TOP_FIELDS, "", path)
    layers = manifest["fingerprint"].get("layers")
    if not isinstance(layers, list) or not layers or not all(_is(v, int) for v in layers):
        raise CacheError(f"{path}: key 'fingerprint.layers' should be a list of integers, "
                         f"found {layers!r}")
    for i, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict):
            raise CacheError(f"{path}: key 'shards[{i}]' should be an object, found "
                             f"{type(shard).__name__}")
        _check_fields(shard, SHARD_FIELDS, f"shards[{i}].", path)
        if not SHARD_NAME.match(shard["name"]):
            raise CacheError(f"{path}: key 'shards[{i}].name' is {shard['name']!r}, not a shard "
                             f"file name")
    if sum(s["n_tokens"] for s in manifest["shards"]) != manifest["n_tokens"]:
        raise CacheError(f"{path}: key 'n_tokens' differs from the sum of the shards' n_tokens")
    for task, entry in manifest["tasks"].items():
        if not isinstance(entry, dict):
            raise CacheError(f"{path}: key 'tasks.{task}' should be an object, found "
                             f"{type(entry).__name__}")


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
        atomic_write_json(cache_dir / MANIFEST, manifest)
        return manifest
    finally:
        if lock is None:
            held.release()


def _is(value, kind: type) -> bool:
    # JSON true/false load as bool, a subclass of int: not a count
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _check_fields(obj: dict, fields: dict[str, type], prefix: str, path: Path) -> None:
    for key, kind in fields.items():
        if key not in obj:
            raise CacheError(f"{path}: key '{prefix}{key}' missing")
        if not _is(obj[key], kind):
            raise CacheError(f"{path}: key '{prefix}{key}' should be {_KINDS[kind]}, found "
                             f"{type(obj[key]).__name__}")


_KINDS = {int: "an integer", str: "a string", dict: "an object", list: "a list"}
