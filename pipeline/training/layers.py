"""A head's --layers spec against the layers a cache holds (its syntax and every other
setting are checked by pipeline.settings.FitSettings)."""

from __future__ import annotations

from pipeline.store import CacheError


def parse_fit_layers(spec: str | int | list[int] | None, cached: list[int]) -> list[int]:
    """None/'all' -> every cached layer; '3' -> [3]; '0,1,2' -> concatenation of those layers."""
    if spec is None or spec == "all":
        return list(cached)
    items = spec if isinstance(spec, list) else [s for s in str(spec).split(",") if s.strip()]
    try:
        layers = [int(item) for item in items]
    except ValueError:
        raise CacheError(f"bad --layers {spec!r}: give cached layer indices like 0 or 0,1,2, "
                         f"or 'all'") from None
    missing = [layer for layer in layers if layer not in cached]
    if missing:
        raise CacheError(f"layer(s) {missing} out of range: this cache holds layers {cached}")
    return layers


def parse_head_layers(spec: str | int | list[int] | None, cached: list[int]
                      ) -> tuple[list[int], bool]:
    """--layers as (layers to read, mix them?): 'mix' reads every cached layer and mixes."""
    if str(spec) == "mix":
        return list(cached), True
    return parse_fit_layers(spec, cached), False
