"""The write side of embed: shards one by one (on background threads), then the manifest."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.fingerprint import first_difference, fingerprint_id as fingerprint_hash
from pipeline.store.files import (atomic_write_h5, atomic_write_json, read_json,
                                  remove_temp_files, sha256_file)
from pipeline.store.integrity import array_digest, shard_problems
from pipeline.store.labels import kept_tasks, prune_label_files
from pipeline.store.layout import (DIGEST, FORMAT_VERSION, LABELS, MANIFEST, SHARDS,
                                   TOKEN_ARRAYS, VOCAB, CacheError, layer_key)
from pipeline.store.lock import CacheLock
from pipeline.store.manifest import check_manifest, update_manifest


@dataclass
class ShardData:
    """The arrays of one shard in corpus order: `hidden` maps layer -> (n_tokens, hidden)
    float16; input_ids, word_ids, example_ids (n_tokens,) int32; char_spans (n_tokens, 2)
    int32; texts (n_examples,) str."""

    hidden: dict[int, np.ndarray]
    input_ids: np.ndarray
    word_ids: np.ndarray
    example_ids: np.ndarray
    char_spans: np.ndarray
    texts: list[str]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


class BackgroundWriter:
    """Writes shards on background threads while the caller computes the next ones.

    They run at normal priority: at nice 19 they starved behind the tokenizer's threads, and
    the writes are what bounds the pass whenever the model is fast (a GPU). Memory: at most
    `ahead` batches of shards wait to be written, so memory holds `ahead` + 1 batches' worth.
    A write error surfaces at the next `write_shards` or at `wait`.
    """

    def __init__(self, writer: "CacheWriter", threads: int = 2, ahead: int = 1):
        self.writer = writer
        self.ahead = ahead
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shard-writer")
        self.pending: list[list[Future]] = []  # per batch queued, oldest first

    def write_shards(self, shards: list[tuple[int, ShardData, int]]) -> None:
        """Queue (index, data, first_example) shards; each is written whole by one thread.
        Returns once at most `ahead` batches, this one included, are unwritten."""
        while len(self.pending) >= self.ahead:
            for future in self.pending.pop(0):
                future.result()
        self.pending.append([self.pool.submit(self.writer.write_shard, *shard)
                             for shard in shards])

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for batch in pending:
            for future in batch:
                future.result()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self.pool.shutdown(wait=True)


class CacheWriter:
    """Writes shards one by one, then the manifest; keeps complete shards of an earlier run.

    The primary writer (the only one, or rank 0 of a distributed run) locks the cache until
    `finish`, refuses other inputs unless `force`, and removes temp files of killed runs; the
    other ranks' writers only write their own shards, after the primary has done that.
    """

    def __init__(self, cache_dir: str | Path, fingerprint: dict, force: bool = False,
                 primary: bool = True):
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.fingerprint_id = fingerprint_hash(fingerprint)
        self.lock = CacheLock(self.cache_dir) if primary else None
        self.temp_files_removed = 0
        self.listed: dict[str, dict] = {}
        try:
            old = _readable_manifest(self.cache_dir)
            if primary:
                old = self._refuse_other_fingerprint(old, force)
                self.temp_files_removed = sum(remove_temp_files(d) for d in (
                    self.cache_dir, self.cache_dir / SHARDS, self.cache_dir / LABELS))
            if old is not None and old.get("fingerprint") == fingerprint:
                try:  # the shards a finished run recorded, with their file sizes
                    check_manifest(old, self.cache_dir / MANIFEST)
                    self.listed = {s["name"]: s for s in old["shards"]}
                except CacheError:  # unusable: every shard is checked on its own instead
                    pass
            (self.cache_dir / SHARDS).mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _refuse_other_fingerprint(self, old: dict | None, force: bool) -> dict | None:
        """The earlier manifest if it is of these inputs; else, with `force`, the cache's
        files are removed (None), and without it a CacheError."""
        if old is None or old.get("fingerprint") == self.fingerprint:
            return old
        if not force and old.get("format_version") != FORMAT_VERSION:
            raise CacheError(
                f"{self.cache_dir} holds a cache of format {old.get('format_version')}, this "
                f"version writes format {FORMAT_VERSION}; re-embed it with --force, or use "
                f"another --out")
        if not force:
            raise CacheError(
                f"{self.cache_dir} holds a cache made from other inputs "
                f"({first_difference(old.get('fingerprint'), self.fingerprint)}); use another "
                f"--out or pass --force")
        (self.cache_dir / MANIFEST).unlink()
        for folder in (SHARDS, LABELS):
            for path in (self.cache_dir / folder).glob("*.h5"):
                path.unlink()
        return None

    def shard_path(self, index: int) -> Path:
        return self.cache_dir / SHARDS / f"shard-{index:05d}.h5"

    def existing_shard(self, index: int, first_example: int, n_examples: int,
                       n_tokens: int, layers: list[int]) -> bool:
        """True when a complete, intact shard for exactly these examples and inputs is on disk:
        every dataset matches its checksum, and the file has the manifest's size if listed."""
        path = self.shard_path(index)
        listed = self.listed.get(path.name, {})
        same = (listed.get("first_example"), listed.get("n_examples")) == (first_example,
                                                                            n_examples)
        return not shard_problems(path, self.fingerprint_id, first_example, n_examples, n_tokens,
                                  layers, n_bytes=listed.get("bytes") if same else None)

    def write_shard(self, index: int, data: ShardData, first_example: int) -> None:
        def fill(f: h5py.File) -> None:
            f.attrs["fingerprint"] = self.fingerprint_id
            f.attrs["first_example"] = first_example
            f.attrs["n_examples"] = len(data.texts)
            arrays = {layer_key(layer): states for layer, states in data.hidden.items()}
            arrays |= {name: getattr(data, name) for name in TOKEN_ARRAYS}
            for name, values in arrays.items():
                f.create_dataset(name, data=values).attrs[DIGEST] = array_digest(values)
            texts = f.create_dataset("texts", data=data.texts, dtype=h5py.string_dtype())
            texts.attrs[DIGEST] = array_digest(data.texts)
        # each dataset is hashed once, here in the writer thread, as it is written
        atomic_write_h5(self.shard_path(index), fill)

    def finish(self, shards: int | list[int], vocab: list[str], extra: dict) -> dict:
        """List every shard (size, counts) of the given indices in corpus order (a count n:
        0..n-1), write vocab.json, then manifest.json (last), keeping the label sets an earlier
        manifest lists whose files still verify; then release the lock."""
        indices = range(shards) if isinstance(shards, int) else shards
        shards = [self._shard_entry(index) for index in indices]
        atomic_write_json(self.cache_dir / VOCAB, vocab)
        vocab_sha256 = sha256_file(self.cache_dir / VOCAB)

        def new_manifest(old: dict | None) -> dict:
            return {
                **extra,
                "format_version": FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "fingerprint_id": self.fingerprint_id,
                "n_tokens": sum(s["n_tokens"] for s in shards),
                "n_examples": sum(s["n_examples"] for s in shards),
                "shards": shards,
                "vocab_file_sha256": vocab_sha256,
                "tasks": kept_tasks(self.cache_dir, old, self.fingerprint_id, shards),
            }
        manifest = update_manifest(self.cache_dir, new_manifest, lock=self.lock, repair=True)
        prune_label_files(self.cache_dir, manifest)  # label sets that no longer verify
        self.close()  # the cache is complete: label writers may take the lock now
        return manifest

    def _shard_entry(self, index: int) -> dict:
        path = self.shard_path(index)
        try:
            with h5py.File(path, "r") as f:
                entry = {"name": path.name,
                         "first_example": int(f.attrs["first_example"]),
                         "n_examples": int(f.attrs["n_examples"]),
                         "n_tokens": int(f["input_ids"].shape[0])}
        except (OSError, KeyError) as err:
            raise CacheError(f"{path}: unreadable after writing "
                             f"({(str(err).splitlines() or ['?'])[0]}); run the command "
                             f"again") from None
        return entry | {"bytes": path.stat().st_size}


def _readable_manifest(cache_dir: Path) -> dict | None:
    """An earlier run's manifest as JSON, or None where there is none or it is unreadable."""
    if not (cache_dir / MANIFEST).exists():
        return None
    try:
        return read_json(cache_dir / MANIFEST)
    except CacheError:  # garbage: the shards prove their own inputs by their attributes
        return None
