"""CPU kernels the embed pass and fit rely on: oneDNN linears and the chunked conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.embedding import onednn
from pipeline.devices import copy_converted, cpu_supports_bf16
from pipeline.embedding import cast_model, forward_layers, load_model


@pytest.mark.parametrize("src_dtype, dst_dtype", [(torch.float16, torch.bfloat16),
                                                  (torch.bfloat16, torch.float16),
                                                  (torch.float32, torch.float16)])
def test_copy_converted_matches_a_direct_conversion(src_dtype, dst_dtype):
    src = (torch.randn(10_001, 7) * 100).to(src_dtype)  # rows not a multiple of the chunk
    dst = torch.empty(src.shape, dtype=dst_dtype)
    assert copy_converted(dst, src, chunk_rows=4096) is dst
    assert torch.equal(dst, src.to(dst_dtype))


needs_bf16 = pytest.mark.skipif(not (cpu_supports_bf16() and onednn.packed_linear_works()),
                                reason="this CPU or PyTorch build has no oneDNN bf16 linear")


@needs_bf16
def test_packed_model_matches_eager_bf16_and_fuses_gelu(tiny_model):
    eager, packed = (load_model(tiny_model, device="cpu") for _ in range(2))
    eager.model.to(torch.bfloat16)
    n_linear = sum(isinstance(m, nn.Linear) for m in packed.model.modules())
    assert cast_model(packed, "bfloat16") == onednn.KERNELS
    modules = list(packed.model.modules())
    assert not any(isinstance(m, nn.Linear) for m in modules)
    assert sum(isinstance(m, onednn.PackedLinear) for m in modules) == n_linear
    fused = [m for m in modules if isinstance(m, onednn.PackedLinear) and m.attr == "gelu"]
    assert len(fused) == packed.model.config.num_hidden_layers

    ids = torch.randint(5, 60, (3, 9))
    mask = torch.ones_like(ids)
    layers = list(range(packed.n_hidden_states))
    for want, got in zip(forward_layers(eager, ids, mask, layers, "bfloat16"),
                         forward_layers(packed, ids, mask, layers, "bfloat16")):
        assert got.dtype == torch.float16 and got.shape == want.shape
        # bf16 keeps 8 bits of mantissa: kernels may round differently, not more
        assert torch.allclose(got.float(), want.float(), atol=0.1, rtol=0.03)


def test_float32_and_cuda_dtypes_keep_eager_kernels(tiny_model):
    lm = load_model(tiny_model, device="cpu")
    assert cast_model(lm, "float32") == "eager"
    assert any(isinstance(m, nn.Linear) for m in lm.model.modules())
