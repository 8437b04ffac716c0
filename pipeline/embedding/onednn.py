"""bfloat16 inference on CPU: a frozen model's linear layers as oneDNN linears.

PyTorch's eager `nn.Linear` on a bf16 CPU runs the matrix product in oneDNN, but copies the
bias into the output first and leaves the activation that follows (BERT's GELU) to a
separate, slower pass. oneDNN's own linear (the op torch.compile's CPU backend uses) takes
weights reordered once into its blocked layout and applies bias and GELU as it writes the
output, so the activation costs no extra pass over memory. Outputs differ from eager bf16 by
bf16 rounding (a unit or two in the last place), so a cache's fingerprint names the kernels
(`KERNELS`).

Only the weights of the frozen, already bf16 model are repacked, in place; anything the
packed op cannot do (another PyTorch build, another activation) keeps its eager module.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

KERNELS = "onednn-linear"


class PackedLinear(nn.Module):
    """An inference-only `nn.Linear` (optionally followed by exact GELU) run by oneDNN with
    its weight prepacked. Input (..., in_features) bf16 -> output (..., out_features) bf16."""

    def __init__(self, linear: nn.Linear, gelu: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # plain attributes, not parameters: the packed layout is oneDNN's, not a state dict's
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, self.attr,
                                                  [], self.algorithm)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"fused={self.attr}")


def is_exact_gelu(module: nn.Module | None) -> bool:
    """transformers' GELUActivation or nn.GELU, both the erf form (not the tanh approximation)."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    return type(module).__name__ == "GELUActivation" and getattr(module, "act", None) is F.gelu


@cache
def packed_linear_works() -> bool:
    """Whether this PyTorch build runs oneDNN's bf16 linear and agrees with `F.linear`."""
    if not (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(5, 32, generator=generator).to(torch.bfloat16)
    try:
        with torch.inference_mode():
            got = PackedLinear(linear, gelu=True)(x).float()
            want = F.gelu(linear(x)).float()
    except (RuntimeError, NotImplementedError):
        return False
    return bool(torch.allclose(got, want, atol=0.05, rtol=0.02))


def pack_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` of a bf16 `model` by a PackedLinear, fusing a linear named
    `dense` into the exact GELU its parent applies next (BERT-style `intermediate` blocks).
    Returns how many linears were packed (0 where the build cannot)."""
    if not packed_linear_works():
        return 0
    packed = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or child.weight.dtype != torch.bfloat16:
                continue
            activation = getattr(parent, "intermediate_act_fn", None)
            gelu = name == "dense" and is_exact_gelu(activation)
            setattr(parent, name, PackedLinear(child, gelu=gelu))
            if gelu:
                parent.intermediate_act_fn = nn.Identity()
            packed += 1
    return packed
