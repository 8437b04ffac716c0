"""Every rule for building and comparing fingerprints: what identifies a model, a cache's
inputs, and whether a head and a cache may be used together.

A fingerprint is a JSON-able dict; its id is the sha256 of its canonical JSON. Nothing here
imports a model library: tensors are hashed through the methods they carry.
"""

from __future__ import annotations

import hashlib
import json

from pipeline.errors import PipelineError

MODEL_KEYS = ("config_sha256", "vocab_sha256", "weights_sha256")


class FingerprintMismatch(PipelineError):
    """A head, cache or label file made from other inputs than the one it is used with."""


def sha256_json(obj) -> str:
    """sha256 of an object's canonical JSON (sorted keys): equal objects, equal hashes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def fingerprint_id(fingerprint: dict) -> str:
    """The id stored in every shard and label file of a cache."""
    return sha256_json(fingerprint)


def weights_sha256(state_dict: dict) -> str:
    """sha256 over a model's tensors, by name, in name order (raw bytes, any dtype)."""
    import torch  # here, not at the top: the store imports this module and never needs torch

    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_fingerprint(name: str, config: dict, vocab: dict, state_dict: dict) -> dict:
    """What identifies a model: its config (minus where it was loaded from), vocabulary and
    weights. The name is kept for messages; two names for the same files are the same model."""
    return {
        "name": name,
        "config_sha256": sha256_json(config | {"_name_or_path": None,
                                               "transformers_version": None}),
        "vocab_sha256": sha256_json(vocab),
        "weights_sha256": weights_sha256(state_dict),
    }


def same_model(a: dict, b: dict) -> bool:
    """Two model fingerprints name the same weights, config and vocabulary (names may differ)."""
    return all(a.get(k) == b.get(k) for k in MODEL_KEYS)


def first_difference(old, new, prefix: str = "") -> str:
    """The first key path where two fingerprints differ, for one-line messages."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} != {new!r}"


def check_head_fits_cache(head_fp: dict, cache_fp: dict, layers: list[int]) -> None:
    """A head applies to any cache made by the same model, precision and max length, that
    holds the layers it reads."""
    if not same_model(head_fp["model"], cache_fp["model"]):
        raise FingerprintMismatch(
            f"fingerprint mismatch: the head was trained on features of model "
            f"{head_fp['model']['name']!r}, this cache holds {cache_fp['model']['name']!r} "
            f"(weights, config or vocabulary differ)")
    for key in ("storage_dtype", "compute_dtype", "max_length"):
        if head_fp.get(key) != cache_fp.get(key):
            raise FingerprintMismatch(f"fingerprint mismatch: head trained with "
                                      f"{key}={head_fp.get(key)}, this cache has "
                                      f"{key}={cache_fp.get(key)}")
    missing = [layer for layer in layers if layer not in cache_fp["layers"]]
    if missing:
        raise FingerprintMismatch(f"the head reads layer(s) {missing}, which this cache does "
                                  f"not hold (it has {cache_fp['layers']})")


def check_head_fits_model(head_fp: dict, model_fp: dict) -> None:
    """predict: the model loaded now must be the one whose features the head was trained on."""
    if not same_model(model_fp, head_fp["model"]):
        raise FingerprintMismatch(
            f"fingerprint mismatch: the head was trained on features of model "
            f"{head_fp['model']['name']!r}; {model_fp['name']!r} has other weights, config or "
            f"vocabulary")


def check_head_width(in_features: int, hidden_size: int, layers: list[int]) -> None:
    """The head's input width must be what its layers of this model give."""
    if in_features != hidden_size * len(layers):
        raise FingerprintMismatch(
            f"the head takes {in_features} features, but {len(layers)} layer(s) of hidden size "
            f"{hidden_size} give {hidden_size * len(layers)}; its head.json is damaged or from "
            f"another model: run `pipeline fit` again")
