"""Heads trained on cached features: built from a config, run on feature batches, saved as a
directory (safetensors weights + JSON that rebuilds them) written and read as a whole."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline import tasks
from pipeline.errors import PipelineError
from pipeline.store.schema import Int, Number, Optional, Text, checked
from pipeline.store import read_json
from pipeline.store.manifest import FINGERPRINT_SPEC, TASK_NAME
from pipeline.training.atomic_dir import write_dir
from pipeline.training.features import FeatureSource
from pipeline.training.sequence import SequenceTagger, TaggerEnsemble
from pipeline.settings import HEAD_KINDS, SEQUENCE_KINDS
from pipeline.training.subword import SUBWORD_MODES

REQUIRED_FILES = ("head.safetensors", "head.json", "lookup.json", "metrics.json")
HEAD_DIR_FILES = {*REQUIRED_FILES, "history.csv", "loss.png"}


@dataclass
class HeadConfig:
    """What rebuilds a head. With mix_layers = L > 0 the input is L layers of equal width
    concatenated, mixed into one by learned softmax weights before the linear/MLP body."""

    kind: str
    in_features: int
    n_labels: int
    hidden: int = 0  # MLP width; BiLSTM size per direction; attention width
    dropout: float = 0.0  # MLP dropout, on the input and on the hidden layer
    mix_layers: int = 0
    depth: int = 0  # sequence heads: BiLSTM layers or attention blocks (0: a row head)
    crf: bool = False  # sequence heads: a CRF over the label path
    chars: bool = False  # sequence heads: character features of each word (training.chars)
    ensemble: int = 1  # sequence heads: members (fit trains them apart), probabilities averaged


def is_sequence(config: HeadConfig) -> bool:
    """Whether the head reads whole examples (training.sequence) rather than single rows."""
    return config.kind in SEQUENCE_KINDS


class ScalarMix(nn.Module):
    """(n, L * d) -> (n, d): gamma * sum_l softmax(w)_l * layer_l (Peters et al., 2018)."""

    def __init__(self, n_layers: int):
        super().__init__()
        self.n_layers = n_layers
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = x.view(x.shape[0], self.n_layers, -1)
        return self.gamma * torch.einsum("l,nld->nd", self.weights.softmax(0), layers)


def build_head(config: HeadConfig) -> nn.Module:
    """Maps (n_tokens, in_features) features to (n_tokens, n_labels) logits."""
    if config.kind not in HEAD_KINDS:
        raise PipelineError(f"unknown head {config.kind!r}; choose one of {', '.join(HEAD_KINDS)}")
    width = config.in_features // config.mix_layers if config.mix_layers else config.in_features
    if is_sequence(config):
        members = [SequenceTagger(config, ScalarMix(config.mix_layers) if config.mix_layers
                                  else None, width) for _ in range(config.ensemble)]
        return members[0] if config.ensemble == 1 else TaggerEnsemble(members)
    if config.kind == "linear":
        body = nn.Linear(width, config.n_labels)
    else:
        if config.hidden < 1:
            raise PipelineError(f"an MLP head needs --hidden >= 1, got {config.hidden}")
        body = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, config.hidden),
                             nn.GELU(), nn.Dropout(config.dropout),
                             nn.Linear(config.hidden, config.n_labels))
    return nn.Sequential(ScalarMix(config.mix_layers), body) if config.mix_layers else body


def head_logits(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, n_labels) float32 logits of an (n, in_features) batch. A bfloat16 batch (features
    held as bf16, see training.features) runs the head's matmuls in bf16 against its float32
    weights, which stay the trained (master) copy."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.dtype == torch.bfloat16):
        return module(x).float()


def mix_weights(module: nn.Module) -> list[float] | None:
    """The softmax layer weights of a mix head, in layer order (an ensemble: its members'
    mean), rounded to 6 places; None for other heads."""
    weights = _mix_softmax(module)
    return None if weights is None else [round(w, 6) for w in weights]


def _mix_softmax(module: nn.Module) -> list[float] | None:
    if isinstance(module, TaggerEnsemble):
        weights = [_mix_softmax(member) for member in module.members]
        return None if weights[0] is None else [sum(w) / len(w) for w in zip(*weights)]
    mix = (module.mix if isinstance(module, SequenceTagger)
           else module[0] if isinstance(module, nn.Sequential) else None)
    return mix.weights.detach().softmax(0).tolist() if isinstance(mix, ScalarMix) else None


def predict_heads(heads: list[tuple[nn.Module, slice]], features: FeatureSource,
                  rows: np.ndarray, device: str | torch.device = "cpu",
                  labels: torch.Tensor | None = None, batch_size: int = 16384
                  ) -> tuple[list[np.ndarray], list[float]]:
    """Each head's (len(rows),) argmax labels, from one gather of the rows' features of which
    each head reads its columns; with (n_tokens,) `labels`, also each head's mean
    cross-entropy over the labelled rows (else an empty list)."""
    preds = [np.empty(len(rows), dtype=np.int64) for _ in heads]
    totals = [0.0 for _ in heads]
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            x = features.batch(batch, device)
            y = None if labels is None else labels[batch].to(x.device)
            for i, (module, columns) in enumerate(heads):
                logits = head_logits(module, x[:, columns])
                preds[i][start:start + len(batch)] = logits.argmax(-1).cpu()
                if y is not None:
                    totals[i] += nn.functional.cross_entropy(
                        logits, y, ignore_index=tasks.IGNORE, reduction="sum").item()
    if labels is None:
        return preds, []
    n_labelled = max(1, int((labels[rows] != tasks.IGNORE).sum()))
    return preds, [total / n_labelled for total in totals]


def predict_rows(module: nn.Module, features: FeatureSource, rows: np.ndarray,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """(len(rows),) argmax label of each row (cache token indices) under one head."""
    return predict_heads([(module, slice(None))], features, rows, device)[0][0]


@dataclass
class SavedHead:
    """A trained head with everything needed to use it: config, task, layers, cache
    fingerprint, and the baselines' training statistics."""

    module: nn.Module
    config: HeadConfig
    task: str
    label_names: list[str]
    layers: list[int]
    fingerprint: dict
    majority_label: int  # most frequent training label: the majority baseline
    lookup: dict  # {"key": "token id" | "word form", "types": [...], "labels": [...]}
    subword: str = "first"  # word features: the first subtoken's, or the mean over the word's

    def save(self, head_dir: str | Path, metrics: dict, extra: dict | None = None,
             companions: dict[str, Callable[[Path], None]] | None = None) -> None:
        """Write the head directory as a whole (see training.atomic_dir): weights, head.json,
        lookup.json, metrics.json and `companions` (file name -> writer(path))."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        meta = {"head": asdict(self.config), "task": self.task, "label_names": self.label_names,
                "layers": self.layers, "fingerprint": self.fingerprint,
                "majority_label": self.majority_label, "subword": self.subword, **(extra or {})}
        write_dir(head_dir, {"head.safetensors": lambda path: save_file(state, path),
                             "head.json": lambda path: _write_json(path, meta),
                             "lookup.json": lambda path: _write_json(path, self.lookup),
                             "metrics.json": lambda path: _write_json(path, metrics),
                             **(companions or {})}, HEAD_DIR_FILES)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# every field of head.json, lookup.json and metrics.json a reader uses (pipeline.store.schema);
# heads written before sequence heads existed have no depth, crf and chars: they are row heads
CONFIG_SPEC = {"kind": Text(choices=HEAD_KINDS), "in_features": Int(min=1),
               "n_labels": Int(min=1), "hidden": Int(min=0), "dropout": Number(min=0, below=1),
               "mix_layers": Int(min=0), "depth": Optional(Int(min=0)), "crf": Optional(bool),
               "chars": Optional(bool), "ensemble": Optional(Int(min=1))}
META_SPEC = {"head": CONFIG_SPEC, "task": Text(pattern=TASK_NAME, what="a task name"),
             "label_names": [str], "layers": [Int(min=0)], "fingerprint": FINGERPRINT_SPEC,
             "majority_label": Int(min=0), "subword": Text(choices=SUBWORD_MODES)}
LOOKUP_SPEC = {"key": Text(choices=("token id", "word form")), "types": list,
               "labels": [Int(min=0)]}
METRICS_SPEC = {"word_accuracy": Optional(Number(min=0)), "warnings": Optional([str])}
REFIT = "run `pipeline fit` again"


def load_head(head_dir: str | Path) -> SavedHead:
    """Read a head directory; a missing, truncated or malformed file is a one-line
    PipelineError naming it."""
    head_dir = Path(head_dir)
    if not any((head_dir / name).exists() for name in REQUIRED_FILES):
        raise PipelineError(f"{head_dir}: no trained head (head.json + head.safetensors); "
                            f"run `pipeline fit` first")
    missing = [name for name in REQUIRED_FILES if not (head_dir / name).is_file()]
    if missing:
        raise PipelineError(f"{head_dir}: incomplete head, {', '.join(missing)} missing; run "
                            f"`pipeline fit` again")
    meta = read_head_json(head_dir / "head.json", META_SPEC)
    lookup = read_head_json(head_dir / "lookup.json", LOOKUP_SPEC)
    read_head_json(head_dir / "metrics.json", METRICS_SPEC)
    config, module = _build_described(head_dir / "head.json", meta, lookup)
    weights = head_dir / "head.safetensors"
    try:
        state = load_file(weights)
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise PipelineError(f"{weights}: unreadable ({str(err).splitlines()[0]}); the file is "
                            f"truncated or corrupt; run `pipeline fit` again") from None
    try:
        module.load_state_dict(state)
    except RuntimeError:
        raise PipelineError(f"{weights}: its tensors do not match the head head.json "
                            f"describes; run `pipeline fit` again") from None
    module.eval()
    return SavedHead(module, config, meta["task"], meta["label_names"], meta["layers"],
                     meta["fingerprint"], meta["majority_label"], lookup, meta["subword"])


def read_head_json(path: Path, spec) -> dict:
    """A JSON object file of a head directory, checked against its spec
    (pipeline.store.schema)."""
    return checked(read_json(path, hint=REFIT), spec, path, PipelineError, REFIT)


def _build_described(path: Path, meta: dict, lookup: dict) -> tuple[HeadConfig, nn.Module]:
    """The config head.json describes, checked against its other fields and lookup.json, and
    its untrained module."""
    config = {key: meta["head"][key] for key in CONFIG_SPEC if key in meta["head"]}
    n_labels, layers = config["n_labels"], meta["layers"]
    key_type = int if lookup["key"] == "token id" else str
    problem = (
        "its label count differs from head.n_labels" if len(meta["label_names"]) != n_labels
        else "majority_label is no label index" if meta["majority_label"] >= n_labels
        else "it reads no layers" if not layers
        else "it reads layers its cache fingerprint does not hold"
        if not set(layers) <= set(meta["fingerprint"]["layers"])
        else "head.mix_layers differs from its layer count"
        if config["mix_layers"] not in (0, len(layers))
        else "a sequence head needs head.depth >= 1"
        if config["kind"] in SEQUENCE_KINDS and config.get("depth", 0) < 1
        else "head.crf needs a sequence head"
        if config.get("crf") and config["kind"] not in SEQUENCE_KINDS
        else "head.chars needs a sequence head"
        if config.get("chars") and config["kind"] not in SEQUENCE_KINDS
        else "head.ensemble needs a sequence head"
        if config.get("ensemble", 1) > 1 and config["kind"] not in SEQUENCE_KINDS
        else "the lookup table (lookup.json) has types and labels of different lengths"
        if len(lookup["types"]) != len(lookup["labels"])
        else "the lookup table (lookup.json) has a label past head.n_labels"
        if any(label >= n_labels for label in lookup["labels"])
        else f"the lookup table (lookup.json) has types that are no {lookup['key']}s"
        if not all(isinstance(t, key_type) and not isinstance(t, bool) for t in lookup["types"])
        else None)
    if problem is None:
        try:
            return HeadConfig(**config), build_head(HeadConfig(**config))
        except (PipelineError, RuntimeError, ValueError) as err:
            problem = str(err)
    raise PipelineError(f"{path}: its fields do not describe a head ({problem}); run "
                        f"`pipeline fit` again")
