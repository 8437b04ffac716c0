"""Heads trained on cached features, saved as safetensors + a JSON config that rebuilds them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.errors import PipelineError
from pipeline.store import atomic_write, atomic_write_json, read_json

HEAD_KINDS = ("linear",)


@dataclass
class HeadConfig:
    kind: str
    in_features: int
    n_labels: int


def build_head(config: HeadConfig) -> nn.Module:
    """Maps (n_tokens, in_features) features to (n_tokens, n_labels) logits."""
    if config.kind == "linear":
        return nn.Linear(config.in_features, config.n_labels)
    raise PipelineError(f"unknown head {config.kind!r}; choose one of {', '.join(HEAD_KINDS)}")


@dataclass
class SavedHead:
    """A trained head with everything needed to use it: config, task, layers, cache fingerprint."""

    module: nn.Module
    config: HeadConfig
    task: str
    label_names: list[str]
    layers: list[int]
    fingerprint: dict
    majority_label: int  # most frequent training label: the baseline every metrics file shows

    def save(self, head_dir: str | Path, extra: dict | None = None) -> None:
        head_dir = Path(head_dir)
        state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        atomic_write(head_dir / "head.safetensors", lambda tmp: save_file(state, tmp))
        atomic_write_json(head_dir / "head.json", {
            "head": asdict(self.config),
            "task": self.task,
            "label_names": self.label_names,
            "layers": self.layers,
            "fingerprint": self.fingerprint,
            "majority_label": self.majority_label,
            **(extra or {}),
        })


def load_head(head_dir: str | Path) -> SavedHead:
    head_dir = Path(head_dir)
    if not (head_dir / "head.json").exists() or not (head_dir / "head.safetensors").exists():
        raise PipelineError(f"{head_dir}: no trained head (head.json + head.safetensors); "
                                f"run `pipeline fit` first")
    meta = read_json(head_dir / "head.json")
    config = HeadConfig(**meta["head"])
    module = build_head(config)
    module.load_state_dict(load_file(head_dir / "head.safetensors"))
    module.eval()
    return SavedHead(module, config, meta["task"], meta["label_names"], meta["layers"],
                     meta["fingerprint"], meta["majority_label"])
