"""The forward pass: batches of token ids -> float16 hidden states of the real tokens."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.devices import converted
from pipeline.embedding.batching import pad, token_budget_batches
from pipeline.embedding.model import DTYPES, LoadedModel
from pipeline.embedding.progress import TokenProgress
from pipeline.embedding.tokens import Encoded


@torch.inference_mode()
def forward_layers(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, layers: list[int],
                   dtype: str) -> list[torch.Tensor]:
    """ids, mask: (batch, longest). Hidden states of the real (unpadded) tokens: per layer
    (n_real_tokens, hidden) float16 on the model's device, rows in batch order (example 0's
    tokens, then example 1's, ...)."""
    if lm.device.type == "cuda":  # from page-locked memory the copies run asynchronously
        ids, mask = ids.pin_memory(), mask.pin_memory()
    ids, mask = ids.to(lm.device, non_blocking=True), mask.to(lm.device, non_blocking=True)
    with torch.autocast(lm.device.type, dtype=DTYPES[dtype], enabled=dtype != "float32"):
        outputs = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    flat_mask = mask.flatten()
    # batches are length-sorted, so many carry no padding at all: then there is nothing to drop
    real = None if bool(flat_mask.all()) else flat_mask.nonzero().squeeze(1)
    states = []
    for layer in layers:
        hidden = outputs.hidden_states[layer].flatten(0, 1)
        if real is not None:
            hidden = hidden.index_select(0, real)
        states.append(converted(hidden, torch.float16) if lm.device.type == "cpu"
                      else hidden.to(torch.float16))
    return states


def embed_examples(lm: LoadedModel, encoded: list[Encoded], layers: list[int], max_tokens: int,
                   dtype: str, progress: TokenProgress | None = None) -> dict[int, np.ndarray]:
    """Hidden states of examples, in their order: layer -> (n_tokens, hidden) float16 numpy,
    n_tokens summed over the examples. Every pass (a whole example or a window of one) is
    batched longest first under the token budget."""
    lengths = [len(e.input_ids) for e in encoded]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # gathered where the model runs: on a GPU, reordering there and copying each layer off
    # once per group beats copying every batch off and reordering on the host
    hidden = {layer: torch.empty((starts[-1], lm.hidden_size), dtype=torch.float16,
                                 device=lm.device) for layer in layers}
    passes = []  # (example, piece, is the example's last piece)
    for i, e in enumerate(encoded):
        pieces = e.passes()
        passes += [(i, piece, j == len(pieces) - 1) for j, piece in enumerate(pieces)]
    for batch in token_budget_batches([len(p.input_ids) for _, p, _ in passes], max_tokens):
        pieces = [passes[k][1] for k in batch]
        ids, mask = pad(pieces, lm.tokenizer.pad_token_id or 0)
        states = forward_layers(lm, ids, mask, layers, dtype)
        # where each kept state of the batch goes: one scatter per layer for the whole batch
        keep = np.concatenate([piece.keep for piece in pieces])
        target = torch.from_numpy(np.concatenate(
            [starts[passes[k][0]] + passes[k][1].rows for k in batch])[keep]).to(lm.device)
        whole = bool(keep.all())  # windows drop the states another window gives better
        for layer, layer_states in zip(layers, states):
            # torch's row copy runs on every core; numpy's fancy assignment on one
            hidden[layer].index_copy_(0, target, layer_states if whole
                                      else layer_states[torch.from_numpy(keep).to(lm.device)])
        if progress is not None:
            progress.update(sum(passes[k][2] for k in batch), len(keep), ids.numel())
    return {layer: states.cpu().numpy() for layer, states in hidden.items()}
