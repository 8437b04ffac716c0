"""Checked reads of the JSON files this project writes (manifest.json, head.json, lookup.json,
...): each file has a declarative spec of every field its readers use, checked once when the
file is read, so no reader meets a missing key or a value of the wrong type or range later
(a KeyError, a TypeError, a traceback). A failed check is one line naming the file and key.

A spec is
    int, str, bool, dict, list     a value of that JSON type (a bool is no int)
    Number / Int / Text(...)       a number, integer or string with a range, pattern or choices
    {"key": spec, ...}             an object with those keys (others allowed); Optional(spec)
                                   marks a key that may be absent
    [spec]                         a list whose every item matches spec
    MapOf(spec, key=pattern)       an object of any keys (matching pattern), each value spec
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError

_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false", dict: "an object",
               list: "a list", float: "a number"}


@dataclass(frozen=True)
class Optional:
    spec: Any


@dataclass(frozen=True)
class Int:
    min: int | None = None
    max: int | None = None

    def describe(self) -> str:
        bounds = [f">= {self.min}" if self.min is not None else "",
                  f"<= {self.max}" if self.max is not None else ""]
        return " ".join(["an integer", " and ".join(filter(None, bounds))]).strip()


@dataclass(frozen=True)
class Number:
    min: float | None = None
    below: float | None = None  # exclusive upper bound

    def describe(self) -> str:
        bounds = [f">= {self.min}" if self.min is not None else "",
                  f"< {self.below}" if self.below is not None else ""]
        return " ".join(["a finite number", " and ".join(filter(None, bounds))]).strip()


@dataclass(frozen=True)
class Text:
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    what: str | None = None  # how a message names a valid value ("a shard file name")

    def describe(self) -> str:
        if self.what:
            return self.what
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        return "a string"


@dataclass(frozen=True)
class MapOf:
    spec: Any
    key: str | None = None  # a regex every key must match
    key_what: str = "a valid name"


class SchemaError(PipelineError):
    """A JSON file whose content is not what its spec says (internal: callers re-raise it as
    their own error class with their hint)."""


def _is(value, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value),
                                                                           type(value).__name__)


def _scalar(spec) -> bool:
    return spec in (int, str, bool, float) or isinstance(spec, (Int, Number, Text))


def _describe(spec) -> str:
    if isinstance(spec, (Int, Number, Text)):
        return spec.describe()
    if isinstance(spec, list):
        inner = _describe(spec[0])
        for article in ("an ", "a "):
            inner = inner.removeprefix(article)
        plural = {"integer": "integers", "string": "strings", "finite number": "numbers",
                  "object": "objects"}
        first = inner.split(" ")[0]
        return "a list of " + plural.get(first, first) + inner[len(first):]
    if isinstance(spec, (dict, MapOf)):
        return "an object"
    return _TYPE_NAMES[spec]


def check(value, spec, key: str = "") -> None:
    """Raise a SchemaError naming `key` (the path to `value`, like shards[0].n_tokens) where
    `value` does not match `spec`."""
    where = f"key '{key}'" if key else "the top level"
    if isinstance(spec, Optional):
        spec = spec.spec
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise SchemaError(f"{where} should be an object, found {_type_name(value)}")
        for name, inner in spec.items():
            if name not in value:
                if isinstance(inner, Optional):
                    continue
                raise SchemaError(f"key '{key + '.' if key else ''}{name}' missing")
            check(value[name], inner, f"{key + '.' if key else ''}{name}")
        return
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise SchemaError(f"{where} should be an object, found {_type_name(value)}")
        for name, inner in value.items():
            if spec.key is not None and not re.fullmatch(spec.key, name):
                raise SchemaError(f"{where} holds {name!r}, not {spec.key_what}")
            check(inner, spec.spec, f"{key + '.' if key else ''}{name}")
        return
    if isinstance(spec, list):
        if not isinstance(value, list):
            raise SchemaError(f"{where} should be {_describe(spec)}, found {_type_name(value)}")
        for i, item in enumerate(value):
            if _scalar(spec[0]):  # a list of numbers or names is named as a whole
                try:
                    check(item, spec[0], key)
                except SchemaError:
                    raise SchemaError(f"{where} should be {_describe(spec)}, found "
                                      f"{_short(value)}") from None
            else:
                check(item, spec[0], f"{key}[{i}]")
        return
    if isinstance(spec, Int):
        if not _is(value, int):
            raise SchemaError(f"{where} should be {spec.describe()}, found {_type_name(value)}")
        if (spec.min is not None and value < spec.min) or (spec.max is not None
                                                           and value > spec.max):
            raise SchemaError(f"{where} is {value}, not {spec.describe()}")
        return
    if isinstance(spec, Number):
        if not _is(value, float) or not math.isfinite(value):
            raise SchemaError(f"{where} should be {spec.describe()}, found {_short(value)}")
        if (spec.min is not None and value < spec.min) or (spec.below is not None
                                                           and value >= spec.below):
            raise SchemaError(f"{where} is {value}, not {spec.describe()}")
        return
    if isinstance(spec, Text):
        if not isinstance(value, str):
            raise SchemaError(f"{where} should be a string, found {_type_name(value)}")
        if (spec.pattern is not None and not re.fullmatch(spec.pattern, value)) or (
                spec.choices is not None and value not in spec.choices):
            raise SchemaError(f"{where} is {_short(value)}, not {spec.describe()}")
        return
    if not _is(value, spec):
        raise SchemaError(f"{where} should be {_TYPE_NAMES[spec]}, found {_type_name(value)}")


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def checked(value, spec, path, error: type[PipelineError] = PipelineError, hint: str = ""):
    """`value` (read from file `path`) if it matches `spec`; else `error` with one line
    '<path>: <what is wrong>[; <hint>]'."""
    try:
        check(value, spec)
    except SchemaError as err:
        raise error(f"{path}: {err}" + (f"; {hint}" if hint else "")) from None
    return value
