"""The shard store: HDF5 shards of token-major arrays plus a JSON manifest.

Layout of a cache directory::

    manifest.json            written last; a cache without it is incomplete
    vocab.json               token string of every id, so labels need no tokenizer
    shards/shard-00000.h5    one per ~shard_tokens tokens; an example never spans two
    labels/<task>.h5         one dataset per shard, added any time without touching shards

Each shard holds, one row per subtoken ([CLS]/[SEP] included), in corpus order:
``hidden/<layer>`` (n_tokens, hidden) float16, ``input_ids``, ``word_ids`` (-1 for
special tokens), ``example_ids`` (global example index), ``char_spans`` (n_tokens, 2)
into the example text, and ``texts`` (n_examples,) the example texts. Every dataset
carries an ``xxh3_128`` attribute of its values, so a shard can be checked without the
manifest (resume) and a flipped bit is caught on first read; the manifest lists each shard
file's sha256.

While a process writes a cache it holds an exclusive lock on ``.lock``; temp files
(``.<name>.*.tmp``) left by a killed writer are removed by the next one.

The store knows nothing about models or tasks: it moves arrays and checks fingerprints.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
import socket
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import xxhash

from pipeline.errors import PipelineError

FORMAT_VERSION = 2  # 2: per-dataset xxh3_128 instead of sha256
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
LOCK = ".lock"
# attribute of every shard dataset: a checksum of its values, checked on every first read, so
# fast matters: xxh3_128 hashes ~9 GB/s here, sha256 1.35 GB/s (1.3 s per Moby-Dick fit load)
DIGEST = "xxh3_128"
TOKEN_ARRAYS = ("input_ids", "word_ids", "example_ids", "char_spans")


class CacheError(PipelineError):
    """A cache that is missing, incomplete, corrupt or made from other inputs."""


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def same_model(a: dict, b: dict) -> bool:
    """Two model fingerprints name the same weights, config and vocabulary (names may differ)."""
    return all(a.get(k) == b.get(k) for k in ("config_sha256", "vocab_sha256", "weights_sha256"))


def sha256_file(path: str | Path) -> str:
    """Hashed through a memory map: no copy of the file's pages (~13% faster than reads)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return hashlib.sha256().hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha256(mapped).hexdigest()


def is_disk_full(err: OSError) -> bool:
    # h5py reports a failed HDF5 write as an OSError whose errno is not set
    return err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err)


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, then rename over `path`: readers never see half a file.

    On any failure the temp file is removed; a full disk becomes a one-line CacheError.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise CacheError(f"disk full while writing {path}; free space on "
                             f"{path.parent} and run the command again") from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temp_files(directory: str | Path) -> int:
    """Delete the temp files atomic_write leaves behind when its process is killed."""
    removed = 0
    for tmp in Path(directory).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def array_digest(values) -> str:
    """xxh3_128 of a dataset's values: the raw bytes of numbers, NUL-joined UTF-8 of strings."""
    values = np.asarray(values)
    if values.dtype.kind in "OSU":
        data = b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in values.ravel())
    else:
        data = np.ascontiguousarray(values).data
    return xxhash.xxh3_128(data).hexdigest()


class CacheLock:
    """An exclusive flock on <cache>/.lock, held while one process writes the cache.

    The kernel drops the lock when its holder exits, SIGKILL included, so the file left
    behind never blocks the next run; it only names the last holder.
    """

    def __init__(self, cache_dir: str | Path):
        path = Path(cache_dir) / LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise CacheError(f"{cache_dir} is being written by {holder}; wait for it to "
                             f"finish or use another --out") from None
        self._file.truncate(0)
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        self._file.close()


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


def shard_problems(path: str | Path, fingerprint_id: str, first_example: int, n_examples: int,
                   n_tokens: int, layers: list[int], hidden_size: int | None = None,
                   sha256: str | None = None, deep: bool = True) -> list[str]:
    """What is wrong with one shard file, as short phrases; [] when it is intact.

    Always checks the attributes (fingerprint, examples) and every dataset's shape and dtype.
    `deep` also reads all values and compares them with each dataset's checksum attribute, and
    the file's sha256 with `sha256` when given (a shard written before per-dataset checksums
    is only trusted on the manifest's word).
    """
    path = Path(path)
    if not path.exists():
        return ["missing"]
    if deep and sha256 is not None and sha256_file(path) != sha256:
        return ["file checksum differs from the manifest (corrupt or replaced)"]
    try:
        with h5py.File(path, "r") as f:
            problems = _attr_problems(f, fingerprint_id, first_example, n_examples)
            expected = {layer_key(layer): ((n_tokens, hidden_size), "float16") for layer in layers}
            expected |= {name: ((n_tokens,), "int32") for name in TOKEN_ARRAYS}
            expected |= {"char_spans": ((n_tokens, 2), "int32"), "texts": ((n_examples,), None)}
            for name, (shape, dtype) in expected.items():
                if name not in f:
                    problems.append(f"{name} missing")
                    continue
                dataset = f[name]
                if any(want is not None and got != want for got, want in
                       zip(dataset.shape, shape)) or len(dataset.shape) != len(shape):
                    problems.append(f"{name} has shape {dataset.shape}, expected "
                                    f"{tuple('?' if d is None else d for d in shape)}")
                elif dtype is not None and dataset.dtype != np.dtype(dtype):
                    problems.append(f"{name} has dtype {dataset.dtype}, expected {dtype}")
                elif deep and DIGEST in dataset.attrs:
                    if array_digest(dataset[()]) != dataset.attrs[DIGEST]:
                        problems.append(f"{name} does not match its checksum (corrupt)")
                elif deep and sha256 is None:
                    problems.append(f"{name} has no checksum (older cache); cannot be trusted")
            return problems
    except (OSError, KeyError, ValueError) as err:
        return [f"unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                f"truncated or corrupt"]


def _attr_problems(f: h5py.File, fingerprint_id: str, first_example: int,
                   n_examples: int) -> list[str]:
    got = {key: f.attrs.get(key) for key in ("fingerprint", "first_example", "n_examples")}
    if got["fingerprint"] != fingerprint_id:
        return ["made from other inputs (fingerprint differs)"]
    if got["first_example"] != first_example or got["n_examples"] != n_examples:
        return [f"holds examples {got['first_example']}+{got['n_examples']}, expected "
                f"{first_example}+{n_examples}"]
    return []


def lower_thread_priority() -> None:
    """Run the calling thread at the lowest CPU priority (nice 19), where the OS allows it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not permitted: stay at normal priority
        pass


class BackgroundWriter:
    """Writes shards on background threads while the caller computes the next ones.

    The threads run at the lowest CPU priority: on a machine whose cores the model's forward
    pass keeps busy, a writer at equal priority slowed the pass by more than its own work
    (the pass's threads wait for each other at every operation, so a thread that loses its
    core stalls them all), while a low-priority writer uses what the pass leaves idle and
    finishes, on every core, once the pass is done. The price is memory: a batch of shards
    waits longer to be written (Moby-Dick's embed peaked at 3.4-3.6 GB instead of 3.06). At
    most one batch of shards waits, so memory stays at two batches' worth; a write error
    surfaces at the next `write_shards` or at `wait`.
    """

    def __init__(self, writer: "CacheWriter", threads: int = 2):
        self.writer = writer
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shard-writer",
                                       initializer=lower_thread_priority)
        self.pending: list[Future] = []

    def write_shards(self, shards: list[tuple[int, "ShardData", int]]) -> None:
        """Queue (index, data, first_example) shards; each is written whole by one thread."""
        self.wait()
        self.pending = [self.pool.submit(self.writer.write_shard, *shard) for shard in shards]

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
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

    The primary writer (the only one, or rank 0 of a distributed run) locks the cache,
    refuses other inputs unless `force`, and removes temp files of killed runs; the other
    ranks' writers only write their own shards, after the primary has done that.
    """

    def __init__(self, cache_dir: str | Path, fingerprint: dict, force: bool = False,
                 primary: bool = True):
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.fingerprint_id = fingerprint_hash(fingerprint)
        self.lock = CacheLock(self.cache_dir) if primary else None
        self.temp_files_removed = 0
        self.file_digests: dict[str, str] = {}  # shard name -> sha256 of the file this run wrote
        self.listed: dict[str, dict] = {}
        try:
            if primary:
                self._refuse_other_fingerprint(force)
                self.temp_files_removed = sum(remove_temp_files(d) for d in (
                    self.cache_dir, self.cache_dir / "shards", self.cache_dir / "labels"))
            manifest_path = self.cache_dir / MANIFEST
            if manifest_path.exists():
                # the shards a finished run recorded: trusted when their file checksum matches
                self.listed = {s["name"]: s for s in read_json(manifest_path)["shards"]}
            (self.cache_dir / "shards").mkdir(parents=True, exist_ok=True)
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

    def existing_shard(self, index: int, first_example: int, n_examples: int,
                       n_tokens: int, layers: list[int]) -> bool:
        """True when a complete, intact shard for exactly these examples and inputs is on disk:
        every dataset matches its checksum (or, for older shards, the manifest's file checksum)."""
        path = self.shard_path(index)
        listed = self.listed.get(path.name, {})
        same = listed.get("first_example") == first_example and listed.get("n_examples") == n_examples
        return not shard_problems(path, self.fingerprint_id, first_example, n_examples, n_tokens,
                                  layers, sha256=listed.get("sha256") if same else None)

    def write_shard(self, index: int, data: ShardData, first_example: int) -> None:
        def write(tmp):
            with h5py.File(tmp, "w") as f:
                f.attrs["fingerprint"] = self.fingerprint_id
                f.attrs["first_example"] = first_example
                f.attrs["n_examples"] = len(data.texts)
                arrays = {layer_key(layer): states for layer, states in data.hidden.items()}
                arrays |= {name: getattr(data, name) for name in TOKEN_ARRAYS}
                for name, values in arrays.items():
                    f.create_dataset(name, data=values).attrs[DIGEST] = array_digest(values)
                texts = f.create_dataset("texts", data=data.texts, dtype=h5py.string_dtype())
                texts.attrs[DIGEST] = array_digest(data.texts)
            # hashed here, while the file is hot in the page cache and off the main thread
            self.file_digests[self.shard_path(index).name] = sha256_file(tmp)
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
            digest = self.file_digests.get(path.name) or sha256_file(path)
            shards[-1].update(bytes=path.stat().st_size, sha256=digest)
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
        self._checked: set[str] = set()  # shards past the fast checks
        self._verified: set[tuple[str, str]] = set()  # (shard, dataset) checksums confirmed

    def shard_path(self, shard: dict) -> Path:
        return self.cache_dir / "shards" / shard["name"]

    def _open(self, shard: dict) -> h5py.File:
        """Open a shard after the fast checks (size, fingerprint, examples, shapes, dtypes);
        each failure is a one-line CacheError naming the shard."""
        path = self.shard_path(shard)
        redo = "run `pipeline embed` again with the same inputs to re-embed it"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"{path}: shard missing; {redo}") from None
        if "bytes" in shard and size != shard["bytes"]:
            raise CacheError(f"{path}: {size:,} bytes, the manifest says {shard['bytes']:,}; the "
                             f"shard is truncated or was replaced; {redo}")
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise CacheError(f"{path}: shard unreadable ({str(err).splitlines()[0]}); it is "
                             f"truncated or corrupt; {redo}") from None
        if shard["name"] not in self._checked:
            problems = shard_problems(path, self.manifest["fingerprint_id"],
                                      shard["first_example"], shard["n_examples"],
                                      shard["n_tokens"], self.layers, self.hidden_size, deep=False)
            if problems:
                f.close()
                raise CacheError(f"{path}: {problems[0]}; {redo}")
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
        if key not in self._verified and DIGEST in dataset.attrs:
            if array_digest(values) != dataset.attrs[DIGEST]:
                raise CacheError(f"{self.shard_path(shard)}: {name} does not match its checksum "
                                 f"(corrupt on disk); run `pipeline embed` again with the same "
                                 f"inputs to re-embed it")
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
        """A per-token array (one of TOKEN_ARRAYS), concatenated over shards."""
        return np.concatenate(self.read_per_shard(name))

    def read_per_shard(self, name: str) -> list[np.ndarray]:
        parts = []
        for shard in self.shards:
            with self._open(shard) as f:
                parts.append(self._read(f, shard, name))
        return parts

    def texts(self) -> list[str]:
        return [t.decode("utf-8") for part in self.read_per_shard("texts") for t in part]

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

    def write_labels(self, task: str, label_names: list[str], per_shard: list[np.ndarray],
                     meta: dict | None = None) -> None:
        """Add (or replace) one task's labels; shards and hidden states are not touched.
        `meta` (level, label_all, source) is kept beside the label names in the manifest."""
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
        self.manifest["tasks"][task] = {"label_names": label_names, "sha256": sha256_file(path),
                                        **(meta or {})}
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
        "windowed": f"{stats.get('windowed_examples', 0)} examples in "
                    f"{stats.get('windows', 0)} windows",
        "blank skipped": stats.get("blank_lines_skipped", 0),
        "corpus": f"{cache.manifest.get('corpus_path')} ({fp['corpus']['format']}, "
                  f"sha256 {fp['corpus']['sha256'][:12]})",
        "tasks": ", ".join(sorted(cache.manifest["tasks"])) or "none",
        "fingerprint": cache.manifest["fingerprint_id"][:16],
    }


def verify(cache_dir: str | Path) -> list[tuple[str, list[str]]]:
    """Check every file of a finished cache against its manifest: shards (exist, size, file and
    per-dataset checksums, attributes, shapes, dtypes, token counts), label files and vocab.json.

    Returns (path relative to the cache, problems) per file, problems == [] when intact.
    """
    cache = Cache(cache_dir)
    results = []
    for shard in cache.shards:
        path = cache.shard_path(shard)
        if path.exists() and path.stat().st_size != shard["bytes"]:
            problems = [f"{path.stat().st_size:,} bytes, the manifest says {shard['bytes']:,} "
                        f"(truncated or replaced)"]
        else:
            problems = shard_problems(path, cache.manifest["fingerprint_id"],
                                      shard["first_example"], shard["n_examples"],
                                      shard["n_tokens"], cache.layers, cache.hidden_size,
                                      sha256=shard["sha256"])
        results.append((f"shards/{shard['name']}", problems))
    for task, meta in sorted(cache.manifest["tasks"].items()):
        path = cache.labels_path(task)
        problems = ([] if path.exists() and sha256_file(path) == meta["sha256"] else
                    ["missing" if not path.exists() else "file checksum differs from the manifest"])
        results.append((f"labels/{path.name}", problems))
    vocab_ok = (cache.cache_dir / VOCAB).exists()
    results.append((VOCAB, [] if vocab_ok else ["missing"]))
    return results
