"""Checks of one shard file: its attributes, every dataset's shape, dtype and checksum."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import xxhash

from pipeline.store.layout import DIGEST, TOKEN_ARRAYS, layer_key


def array_digest(values) -> str:
    """xxh3_128 of a dataset's values: the raw bytes of numbers, NUL-joined UTF-8 of strings."""
    values = np.asarray(values)
    if values.dtype.kind in "OSU":
        data = b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in values.ravel())
    else:
        data = np.ascontiguousarray(values).data
    return xxhash.xxh3_128(data).hexdigest()


def expected_datasets(n_tokens: int, n_examples: int, layers: list[int],
                      hidden_size: int | None) -> dict[str, tuple[tuple, str | None]]:
    """Every dataset of a shard -> (shape, dtype); None where any value is allowed."""
    expected = {layer_key(layer): ((n_tokens, hidden_size), "float16") for layer in layers}
    expected |= {name: ((n_tokens,), "int32") for name in TOKEN_ARRAYS}
    expected |= {"char_spans": ((n_tokens, 2), "int32"), "texts": ((n_examples,), None)}
    return expected


def shard_problems(path: str | Path, fingerprint_id: str, first_example: int, n_examples: int,
                   n_tokens: int, layers: list[int], hidden_size: int | None = None,
                   n_bytes: int | None = None, deep: bool = True) -> list[str]:
    """What is wrong with one shard file, as short phrases; [] when it is intact.

    Always checks the file's size against `n_bytes` when given, the attributes (fingerprint,
    examples) and every dataset's shape, dtype and checksum attribute. `deep` also compares
    every dataset's values with its checksum (xxh3_128, the only checksum of a shard).
    """
    path = Path(path)
    if not path.exists():
        return ["missing"]
    if n_bytes is not None and path.stat().st_size != n_bytes:
        return [f"{path.stat().st_size:,} bytes, the manifest says {n_bytes:,} "
                f"(truncated or replaced)"]
    try:
        with h5py.File(path, "r") as f:
            problems = _attr_problems(f, fingerprint_id, first_example, n_examples)
            for name, (shape, dtype) in expected_datasets(n_tokens, n_examples, layers,
                                                          hidden_size).items():
                problem = _dataset_problem(f, name, shape, dtype, deep)
                if problem:
                    problems.append(problem)
            return problems
    except (OSError, KeyError, ValueError) as err:
        return [f"unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                f"truncated or corrupt"]


def _dataset_problem(f: h5py.File, name: str, shape: tuple, dtype: str | None,
                     deep: bool) -> str | None:
    if name not in f:
        return f"{name} missing"
    dataset = f[name]
    if len(dataset.shape) != len(shape) or any(
            want is not None and got != want for got, want in zip(dataset.shape, shape)):
        return (f"{name} has shape {dataset.shape}, expected "
                f"{tuple('?' if d is None else d for d in shape)}")
    if dtype is not None and dataset.dtype != np.dtype(dtype):
        return f"{name} has dtype {dataset.dtype}, expected {dtype}"
    if DIGEST not in dataset.attrs:
        return f"{name} has no checksum attribute (corrupt)"
    if deep and array_digest(dataset[()]) != dataset.attrs[DIGEST]:
        return f"{name} does not match its checksum (corrupt)"
    return None


def _attr_problems(f: h5py.File, fingerprint_id: str, first_example: int,
                   n_examples: int) -> list[str]:
    got = {key: f.attrs.get(key) for key in ("fingerprint", "first_example", "n_examples")}
    if got["fingerprint"] != fingerprint_id:
        return ["made from other inputs (fingerprint differs)"]
    if got["first_example"] != first_example or got["n_examples"] != n_examples:
        return [f"holds examples {got['first_example']}+{got['n_examples']}, expected "
                f"{first_example}+{n_examples}"]
    return []
