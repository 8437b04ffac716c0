"""`pipeline verify`: every file of a finished cache checked against its manifest."""

from __future__ import annotations

from pathlib import Path

from pipeline.store.files import sha256_file
from pipeline.store.integrity import shard_problems
from pipeline.store.labels import label_path, label_problems
from pipeline.store.layout import LABELS, SHARDS, VOCAB
from pipeline.store.reader import Cache


def verify(cache_dir: str | Path) -> list[tuple[str, list[str]]]:
    """Check shards (exist, size, every dataset's xxh3_128 checksum, attributes, shapes,
    dtypes, token counts), label files (checksum, owner, shapes, value range) and vocab.json (checksum).

    Returns (path relative to the cache, problems) per file, problems == [] when intact.
    """
    cache = Cache(cache_dir)
    fingerprint_id = cache.manifest["fingerprint_id"]
    results = []
    for shard in cache.shards:
        path = cache.shard_path(shard)
        problems = shard_problems(path, fingerprint_id, shard["first_example"],
                                  shard["n_examples"], shard["n_tokens"], cache.layers,
                                  cache.hidden_size, n_bytes=shard["bytes"])
        results.append((f"{SHARDS}/{shard['name']}", problems))
    for task, entry in sorted(cache.manifest["tasks"].items()):
        path = label_path(cache.cache_dir, task, entry)
        results.append((f"{LABELS}/{path.name}", label_problems(
            cache.cache_dir, task, entry, fingerprint_id, cache.shards)))
    results.append((VOCAB, _vocab_problems(cache)))
    return results


def _vocab_problems(cache: Cache) -> list[str]:
    path, want = cache.cache_dir / VOCAB, cache.manifest.get("vocab_file_sha256")
    if not path.exists():
        return ["missing"]
    if not isinstance(want, str):
        return ["the manifest has no checksum of it (key 'vocab_file_sha256')"]
    return [] if sha256_file(path) == want else ["file checksum differs from the manifest"]
