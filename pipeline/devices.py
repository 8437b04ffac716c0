"""Where tensors run: 'auto' picks CUDA when present."""

from __future__ import annotations

import torch

from pipeline.errors import PipelineError


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)
