"""Heads trained on cached features, saved as safetensors + a JSON config that rebuilds them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.errors import PipelineError
from pipeline.store import atomic_write, atomic_write_json, read_json

HEAD_KINDS = ("linear", "mlp")


@dataclass
class HeadConfig:
    """What rebuilds a head. With mix_layers = L > 0 the input is L layers of equal width
    concatenated, mixed into one by learned softmax weights before the linear/MLP body."""

    kind: str
    in_features: int
    n_labels: int
    hidden: int = 0  # MLP width
    dropout: float = 0.0  # MLP dropout, on the input and on the hidden layer
    mix_layers: int = 0


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
    held as bf16, see pipeline.features) runs the head's matmuls in bf16 against its float32
    weights, which stay the trained (master) copy."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.dtype == torch.bfloat16):
        return module(x).float()


def mix_weights(module: nn.Module) -> list[float] | None:
    """The softmax layer weights of a mix head, in layer order; None for other heads."""
    if isinstance(module, nn.Sequential) and isinstance(module[0], ScalarMix):
        return [round(w, 6) for w in module[0].weights.detach().softmax(0).tolist()]
    return None


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
    subword: str = "first"  # word features: the first subtoken's, or the mean over the word's

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
            "subword": self.subword,
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
                     meta["fingerprint"], meta["majority_label"], meta.get("subword", "first"))
