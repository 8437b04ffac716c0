"""The read side of a finished cache: arrays concatenated over shards, in corpus order, each
checked the first time it is read."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.store.schema import checked
from pipeline.store import labels as label_files
from pipeline.store.files import read_json, sha256_file
from pipeline.store.integrity import array_digest, shard_problems
from pipeline.store.layout import DIGEST, MANIFEST, SHARDS, VOCAB, CacheError, layer_key
from pipeline.store.manifest import read_manifest

REDO = "run `pipeline embed` again with the same inputs to re-embed it"
REWRITE = "run `pipeline embed` again with the same inputs to rewrite it"


class Cache:
    """A finished cache. Opening one reads and checks manifest.json; each shard gets the fast
    checks (size, fingerprint, examples, shapes, dtypes) when first opened, and each dataset
    its checksum when first read."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        self._load(read_manifest(self.cache_dir))
        self._checked: set[str] = set()  # shards past the fast checks
        self._verified: set[tuple[str, str]] = set()  # (shard, dataset) checksums confirmed

    def _load(self, manifest: dict) -> None:
        self.manifest = manifest
        self.fingerprint = manifest["fingerprint"]
        self.shards = manifest["shards"]
        self.n_tokens = manifest["n_tokens"]
        self.n_examples = manifest["n_examples"]
        self.layers = list(self.fingerprint["layers"])
        self.hidden_size = manifest["hidden_size"]

    def shard_path(self, shard: dict) -> Path:
        return self.cache_dir / SHARDS / shard["name"]

    def _open(self, shard: dict) -> h5py.File:
        """Open a shard after the fast checks; each failure is a one-line CacheError naming it."""
        path = self.shard_path(shard)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"{path}: shard missing; {REDO}") from None
        if size != shard["bytes"]:
            raise CacheError(f"{path}: {size:,} bytes, the manifest says {shard['bytes']:,}; the "
                             f"shard is truncated or was replaced; {REDO}")
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise CacheError(f"{path}: shard unreadable ({str(err).splitlines()[0]}); it is "
                             f"truncated or corrupt; {REDO}") from None
        if shard["name"] not in self._checked:
            problems = shard_problems(path, self.manifest["fingerprint_id"],
                                      shard["first_example"], shard["n_examples"],
                                      shard["n_tokens"], self.layers, self.hidden_size, deep=False)
            if problems:
                f.close()
                raise CacheError(f"{path}: {problems[0]}; {REDO}")
            self._checked.add(shard["name"])
        return f

    def _read(self, f: h5py.File, shard: dict, name: str, out: np.ndarray | None = None,
              start: int = 0) -> np.ndarray:
        """One dataset of an open shard (into out[start:...] when given), checked against its
        checksum attribute the first time this Cache reads it: a flipped bit is an error here."""
        dataset = f[name]
        if out is None:
            values = dataset[()]
        else:
            dataset.read_direct(out, dest_sel=np.s_[start:start + len(dataset)])
            values = out[start:start + len(dataset)]
        key = (shard["name"], name)
        if key not in self._verified:
            if array_digest(values) != dataset.attrs[DIGEST]:
                raise CacheError(f"{self.shard_path(shard)}: {name} does not match its checksum "
                                 f"(corrupt on disk); {REDO}")
            self._verified.add(key)
        return values

    def check_layers(self, layers: list[int]) -> None:
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise CacheError(f"layer(s) {missing} not cached; this cache has layers {self.layers}")

    def read_layer(self, layer: int) -> np.ndarray:
        """(n_tokens, hidden) float16 for one layer, filled shard by shard into one array."""
        self.check_layers([layer])
        out = np.empty((self.n_tokens, self.hidden_size), dtype=np.float16)
        start = 0
        for shard in self.shards:
            with self._open(shard) as f:
                self._read(f, shard, layer_key(layer), out, start)
                start += shard["n_tokens"]
        return out

    def read_shard_layers(self, shard: dict, layers: list[int]) -> list[np.ndarray]:
        """One shard's hidden states: per layer (shard n_tokens, hidden) float16."""
        self.check_layers(layers)
        with self._open(shard) as f:
            return [self._read(f, shard, layer_key(layer)) for layer in layers]

    def iter_shard_layers(self, shard: dict, layers: list[int], staging: np.ndarray):
        """One shard's hidden states read one layer at a time into `staging` (at least
        n_tokens rows, float16): yields a (n_tokens, hidden) view of it per layer, valid until
        the next one is read."""
        self.check_layers(layers)
        with self._open(shard) as f:
            for layer in layers:
                yield self._read(f, shard, layer_key(layer), staging)[:shard["n_tokens"]]

    def read(self, name: str) -> np.ndarray:
        """A per-token array (one of TOKEN_ARRAYS), concatenated over shards: (n_tokens, ...)."""
        return np.concatenate(self.read_per_shard(name))

    def read_per_shard(self, name: str) -> list[np.ndarray]:
        return [self.read_shard_array(shard, name) for shard in self.shards]

    def read_shard_array(self, shard: dict, name: str) -> np.ndarray:
        """One shard's per-token array (one of TOKEN_ARRAYS): (shard n_tokens, ...)."""
        with self._open(shard) as f:
            return self._read(f, shard, name)

    def read_shard_texts(self, shard: dict) -> list[str]:
        """One shard's (shard n_examples,) example texts."""
        return [t.decode("utf-8") for t in self.read_shard_array(shard, "texts")]

    def texts(self) -> list[str]:
        """The (n_examples,) example texts, in corpus order."""
        return [text for shard in self.shards for text in self.read_shard_texts(shard)]

    def vocab(self) -> list[str]:
        """The token string of every id, checked against the manifest's sha256 of vocab.json."""
        path, want = self.cache_dir / VOCAB, self.manifest.get("vocab_file_sha256")
        if not isinstance(want, str):
            raise CacheError(f"{self.cache_dir / MANIFEST}: key 'vocab_file_sha256' missing; "
                             f"{REWRITE}")
        if not path.exists() or sha256_file(path) != want:
            problem = "missing" if not path.exists() else "differs from the manifest's checksum"
            raise CacheError(f"{path}: {problem}; {REWRITE}")
        return checked(read_json(path, kind=list), [str], path, CacheError, REWRITE)

    def labels_path(self, task: str) -> Path:
        return label_files.label_path(self.cache_dir, task, self.manifest["tasks"].get(task, {}))

    def has_labels(self, task: str) -> bool:
        """The manifest lists a label file for `task` and it is on disk (checked when read)."""
        entry = self.manifest["tasks"].get(task)
        return entry is not None and label_files.file_name(task, entry) is not None \
            and self.labels_path(task).exists()

    def label_names(self, task: str) -> list[str]:
        return self.manifest["tasks"][task]["label_names"]

    def read_labels(self, task: str) -> np.ndarray:
        """(n_tokens,) int16 labels of `task`, -100 where ignored; checked on every read."""
        if not self.has_labels(task):
            self._reload_if_same_cache()  # another process may have replaced the label set
        if task not in self.manifest["tasks"]:
            known = ", ".join(sorted(self.manifest["tasks"])) or "none"
            raise CacheError(f"{self.cache_dir}: no labels for task {task!r} (labelled: {known})")
        return np.concatenate(label_files.read_labels(self.cache_dir, self.manifest, task))

    def write_labels(self, task: str, label_names: list[str], per_shard: list[np.ndarray],
                     meta: dict | None = None) -> None:
        """Add (or replace) one task's labels, (shard n_tokens,) ints per shard; shards and
        hidden states are not touched. `meta` (level, label_all, source) is kept beside the
        label names in the manifest."""
        self._load(label_files.write_labels(self.cache_dir, self.manifest, task, label_names,
                                            per_shard, meta))

    def layer_bytes(self, layers: list[int]) -> int:
        return self.n_tokens * self.hidden_size * 2 * len(layers)

    def _reload_if_same_cache(self) -> None:
        try:
            manifest = read_manifest(self.cache_dir)
        except CacheError:
            return
        if manifest["fingerprint_id"] == self.manifest["fingerprint_id"] and \
                manifest["shards"] == self.shards:
            self._load(manifest)
