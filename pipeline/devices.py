"""Where tensors run ('auto' picks CUDA when present), and what the CPU computes fast."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

from pipeline.errors import PipelineError


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError("--device cuda asked for, but no CUDA device is available")
    return torch.device(device)


@cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
