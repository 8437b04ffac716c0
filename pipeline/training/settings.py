"""Training settings checked before any work: a bad value is a one-line PipelineError naming
the setting, never a crash (or a NaN) epochs later. Also the --layers spec of a cache."""

from __future__ import annotations

import math
from numbers import Integral, Real

from pipeline.errors import PipelineError
from pipeline.store import CacheError
from pipeline.training.subword import SUBWORD_MODES

HEAD_KINDS = ("linear", "mlp")
OPTIMIZERS = ("adamw", "lbfgs")
SCHEDULES = ("constant", "cosine", "linear")


def _integer(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


# setting -> (test, what it must be)
RANGES = {
    "epochs": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "batch_size": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "hidden": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "dropout": (lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "patience": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "val_fraction": (lambda v: _finite(v) and 0 < v < 1, "a number between 0 and 1"),
}
CHOICES = {"head": HEAD_KINDS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
           "subword": SUBWORD_MODES}


def check_settings(**settings) -> None:
    """Raise a PipelineError for the first setting out of its range or choices; names not
    listed in RANGES or CHOICES pass unchecked."""
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if name in RANGES:
            test, want = RANGES[name]
            if not test(value):
                raise PipelineError(f"{flag} must be {want}, got {value!r}")
        elif name in CHOICES and value not in CHOICES[name]:
            raise PipelineError(f"unknown {flag} {value!r}; choose one of "
                                f"{', '.join(CHOICES[name])}")


def check_optimizer(optimizer: str, head: str, mix: bool, schedule: str) -> None:
    """L-BFGS takes full-batch steps on a convex problem and picks its own step sizes."""
    if optimizer == "lbfgs" and (head != "linear" or mix):
        raise PipelineError("--optimizer lbfgs trains linear heads on fixed layers (a convex "
                            "problem); use adamw for mlp heads and --layers mix")
    if optimizer == "lbfgs" and schedule != "constant":
        raise PipelineError("--optimizer lbfgs finds its own step sizes; --schedule applies "
                            "to adamw")


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
