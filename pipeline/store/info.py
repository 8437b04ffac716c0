"""The `pipeline info` report: a cache's manifest in human terms."""

from __future__ import annotations

from pathlib import Path

from pipeline.store.reader import Cache


def info(cache_dir: str | Path) -> dict:
    """Model, layers, sizes, corpus statistics and labelled tasks of a cache, as strings."""
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
