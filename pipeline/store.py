"""The shard store: HDF5 shards of token-major arrays plus a JSON manifest.

Layout of a cache directory::

    manifest.json            written last; a cache without it is incomplete
    vocab.json               token string of every id, so labels need no tokenizer
    shards/shard-00000.h5    one per ~shard_tokens tokens; an example never spans two
    labels/<task>.h5         one dataset per shard, added any time without touching shards

Each shard holds, one row per subtoken ([CLS]/[SEP] included), in corpus order:
``hidden/<layer>`` (n_tokens, hidden) float16, ``input_ids``, ``word_ids`` (-1 for
special tokens), ``example_ids`` (global example index), ``char_spans`` (n_tokens, 2)
into the example text, and ``texts`` (n_examples,) the example texts.

The store knows nothing about models or tasks: it moves arrays and checks fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from pipeline.errors import PipelineError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
TOKEN_ARRAYS = ("input_ids", "word_ids", "example_ids", "char_spans")


class CacheError(PipelineError):
    """A cache that is missing, incomplete, corrupt or made from other inputs."""


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def same_model(a: dict, b: dict) -> bool:
    """Two model fingerprints name the same weights, config and vocabulary (names may differ)."""
    return all(a.get(k) == b.get(k) for k in ("config_sha256", "vocab_sha256", "weights_sha256"))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
    atomic_write(path, write)


def read_json(path: str | Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def layer_key(layer: int) -> str:
    return f"hidden/{layer}"


@dataclass
class ShardData:
    """The arrays of one shard in corpus order; `hidden` maps layer -> (n_tokens, hidden) float16."""

    hidden: dict[int, np.ndarray]
    input_ids: np.ndarray
    word_ids: np.ndarray
    example_ids: np.ndarray
    char_spans: np.ndarray
    texts: list[str]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


class CacheWriter:
    """Writes shards one by one, then the manifest; keeps complete shards of an earlier run."""

    def __init__(self, cache_dir: str | Path, fingerprint: dict, force: bool = False):
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.fingerprint_id = fingerprint_hash(fingerprint)
        self._refuse_other_fingerprint(force)
        (self.cache_dir / "shards").mkdir(parents=True, exist_ok=True)

    def _refuse_other_fingerprint(self, force: bool) -> None:
        manifest_path = self.cache_dir / MANIFEST
        if not manifest_path.exists():
            return
        old = read_json(manifest_path).get("fingerprint")
        if old == self.fingerprint:
            return
        if not force:
            raise CacheError(
                f"{self.cache_dir} holds a cache made from other inputs "
                f"({_first_difference(old, self.fingerprint)}); use another --out or pass --force")
        manifest_path.unlink()
        for path in (self.cache_dir / "shards").glob("*.h5"):
            path.unlink()
        for path in (self.cache_dir / "labels").glob("*.h5"):
            path.unlink()

    def shard_path(self, index: int) -> Path:
        return self.cache_dir / "shards" / f"shard-{index:05d}.h5"

    def existing_shard(self, index: int, first_example: int, n_examples: int) -> bool:
        """True when a complete shard for exactly these examples and inputs is already on disk."""
        path = self.shard_path(index)
        if not path.exists():
            return False
        try:
            with h5py.File(path, "r") as f:
                return (f.attrs.get("fingerprint") == self.fingerprint_id
                        and int(f.attrs["first_example"]) == first_example
                        and int(f.attrs["n_examples"]) == n_examples)
        except (OSError, KeyError):
            return False

    def write_shard(self, index: int, data: ShardData, first_example: int) -> None:
        def write(tmp):
            with h5py.File(tmp, "w") as f:
                f.attrs["fingerprint"] = self.fingerprint_id
                f.attrs["first_example"] = first_example
                f.attrs["n_examples"] = len(data.texts)
                for layer, states in data.hidden.items():
                    f.create_dataset(layer_key(layer), data=states)
                for name in TOKEN_ARRAYS:
                    f.create_dataset(name, data=getattr(data, name))
                f.create_dataset("texts", data=data.texts, dtype=h5py.string_dtype())
        atomic_write(self.shard_path(index), write)

    def finish(self, n_shards: int, vocab: list[str], extra: dict) -> dict:
        """Checksum every shard and write vocab.json, then manifest.json (last)."""
        shards = []
        for index in range(n_shards):
            path = self.shard_path(index)
            with h5py.File(path, "r") as f:
                shards.append({
                    "name": path.name,
                    "first_example": int(f.attrs["first_example"]),
                    "n_examples": int(f.attrs["n_examples"]),
                    "n_tokens": int(f["input_ids"].shape[0]),
                })
            shards[-1].update(bytes=path.stat().st_size, sha256=sha256_file(path))
        atomic_write_json(self.cache_dir / VOCAB, vocab)
        manifest = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "fingerprint_id": self.fingerprint_id,
            "n_tokens": sum(s["n_tokens"] for s in shards),
            "n_examples": sum(s["n_examples"] for s in shards),
            "shards": shards,
            "tasks": {},
            **extra,
        }
        atomic_write_json(self.cache_dir / MANIFEST, manifest)
        return manifest


def _first_difference(old, new, prefix="") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} != {new!r}"


class Cache:
    """Read side of a finished cache. Arrays come back concatenated over shards, in corpus order."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / MANIFEST
        if not manifest_path.exists():
            what = "incomplete (no manifest.json; run `pipeline embed` again to finish it)" \
                if (self.cache_dir / "shards").exists() else "not a cache (no manifest.json)"
            raise CacheError(f"{self.cache_dir}: {what}")
        self.manifest = read_json(manifest_path)
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise CacheError(f"{self.cache_dir}: cache format {self.manifest.get('format_version')}, "
                             f"this version reads format {FORMAT_VERSION}; embed again")
        self.fingerprint = self.manifest["fingerprint"]
        self.shards = self.manifest["shards"]
        self.n_tokens = self.manifest["n_tokens"]
        self.n_examples = self.manifest["n_examples"]
        self.layers = list(self.fingerprint["layers"])
        self.hidden_size = self.manifest["hidden_size"]

    def _open(self, shard: dict) -> h5py.File:
        path = self.cache_dir / "shards" / shard["name"]
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:
            raise CacheError(f"{path}: shard missing; run `pipeline embed` again") from None
        except OSError as err:
            raise CacheError(f"{path}: shard unreadable ({err}); it is truncated or corrupt, "
                             f"delete it and run `pipeline embed` again") from None
        if f["input_ids"].shape[0] != shard["n_tokens"]:
            f.close()
            raise CacheError(f"{path}: {f['input_ids'].shape[0]} tokens, manifest says "
                             f"{shard['n_tokens']}; the shard was replaced, embed again")
        return f

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
                stop = start + shard["n_tokens"]
                f[layer_key(layer)].read_direct(out, dest_sel=np.s_[start:stop])
                start = stop
        return out

    def read(self, name: str) -> np.ndarray:
        """A per-token array (one of TOKEN_ARRAYS), concatenated over shards."""
        parts = []
        for shard in self.shards:
            with self._open(shard) as f:
                parts.append(f[name][()])
        return np.concatenate(parts)

    def read_per_shard(self, name: str) -> list[np.ndarray]:
        parts = []
        for shard in self.shards:
            with self._open(shard) as f:
                parts.append(f[name][()])
        return parts

    def texts(self) -> list[str]:
        out = []
        for shard in self.shards:
            with self._open(shard) as f:
                out.extend(t.decode("utf-8") for t in f["texts"][()])
        return out

    def vocab(self) -> list[str]:
        return read_json(self.cache_dir / VOCAB)

    def labels_path(self, task: str) -> Path:
        return self.cache_dir / "labels" / f"{task}.h5"

    def has_labels(self, task: str) -> bool:
        return task in self.manifest["tasks"] and self.labels_path(task).exists()

    def label_names(self, task: str) -> list[str]:
        return self.manifest["tasks"][task]["label_names"]

    def read_labels(self, task: str) -> np.ndarray:
        """(n_tokens,) int16 labels of `task`, -100 where ignored."""
        if not self.has_labels(task):
            known = ", ".join(sorted(self.manifest["tasks"])) or "none"
            raise CacheError(f"{self.cache_dir}: no labels for task {task!r} (labelled: {known})")
        with h5py.File(self.labels_path(task), "r") as f:
            return np.concatenate([f[shard["name"]][()] for shard in self.shards])

    def write_labels(self, task: str, label_names: list[str], per_shard: list[np.ndarray]) -> None:
        """Add (or replace) one task's labels; shards and hidden states are not touched."""
        for shard, labels in zip(self.shards, per_shard, strict=True):
            if len(labels) != shard["n_tokens"]:
                raise CacheError(f"labels for {shard['name']}: {len(labels)} rows, "
                                 f"shard has {shard['n_tokens']} tokens")

        def write(tmp):
            with h5py.File(tmp, "w") as f:
                for shard, labels in zip(self.shards, per_shard):
                    f.create_dataset(shard["name"], data=np.asarray(labels, dtype=np.int16))
        path = self.labels_path(task)
        atomic_write(path, write)
        self.manifest["tasks"][task] = {"label_names": label_names, "sha256": sha256_file(path)}
        atomic_write_json(self.cache_dir / MANIFEST, self.manifest)

    def layer_bytes(self, layers: list[int]) -> int:
        return self.n_tokens * self.hidden_size * 2 * len(layers)


def info(cache_dir: str | Path) -> dict:
    """A cache's manifest in human terms."""
    cache = Cache(cache_dir)
    fp, stats = cache.fingerprint, cache.manifest.get("stats", {})
    on_disk = sum(s["bytes"] for s in cache.shards)
    return {
        "model": fp["model"]["name"],
        "layers": ",".join(map(str, cache.layers)),
        "hidden size": cache.hidden_size,
        "dtype": f"{fp['storage_dtype']} stored, {fp['compute_dtype']} computed",
        "examples": f"{cache.n_examples:,}",
        "tokens": f"{cache.n_tokens:,}",
        "shards": len(cache.shards),
        "bytes": f"{on_disk:,} ({on_disk / max(1, cache.n_tokens * len(cache.layers)):,.0f} "
                 f"per token per layer)",
        "truncated": stats.get("truncated_examples", 0),
        "blank skipped": stats.get("blank_lines_skipped", 0),
        "corpus": f"{cache.manifest.get('corpus_path')} ({fp['corpus']['format']}, "
                  f"sha256 {fp['corpus']['sha256'][:12]})",
        "tasks": ", ".join(sorted(cache.manifest["tasks"])) or "none",
        "fingerprint": cache.manifest["fingerprint_id"][:16],
    }
