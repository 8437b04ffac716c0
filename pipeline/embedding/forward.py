"""The forward pass: batches of token ids -> float16 hidden states of the real tokens."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.devices import converted
from pipeline.embedding.batching import pad, token_budget_batches
from pipeline.embedding.model import DTYPES, LoadedModel
from pipeline.embedding.progress import TokenProgress
from pipeline.embedding.tokens import Encoded
from pipeline.embedding.windows import Piece


@torch.inference_mode()
def forward_layers(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, layers: list[int],
                   dtype: str, padded: bool = False) -> list[torch.Tensor]:
    """ids, mask: (batch, longest). Hidden states of the real (unpadded) tokens: per layer
    (n_real_tokens, hidden) float16 on the model's device, rows in batch order (example 0's
    tokens, then example 1's, ...). With `padded`, per layer (batch, longest, hidden) float16,
    padding rows included (the caller picks the real ones)."""
    if lm.device.type == "cuda":  # from page-locked memory the copies run asynchronously
        ids, mask = ids.pin_memory(), mask.pin_memory()
    ids, mask = ids.to(lm.device, non_blocking=True), mask.to(lm.device, non_blocking=True)
    with torch.autocast(lm.device.type, dtype=DTYPES[dtype], enabled=dtype != "float32"):
        outputs = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    if padded:
        return [(converted(outputs.hidden_states[layer].flatten(0, 1), torch.float16)
                 .view(ids.shape + (-1,)) if lm.device.type == "cpu"
                 else outputs.hidden_states[layer].to(torch.float16)) for layer in layers]
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


def capacity(n: int) -> int:
    """n rounded up to one of 8 steps per doubling (at most 1/8 more): groups of nearly the
    same size then reuse one buffer, where each new largest group would otherwise leave the
    old buffer's memory behind as a hole, so the process would grow with the corpus."""
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


class HostBuffers:
    """Reused host memory for the hidden states of groups: `sets` sets, taken in turn, so the
    writer threads may still read the states of the sets - 1 groups before while the next
    group's are gathered. Safe as long as a group's shards are written before the group
    `sets` later is taken (BackgroundWriter.write_shards waits for that, given
    ahead=sets - 1). A set grows to the largest group it has held (rounded up, see
    `capacity`) and is never freed before the run ends; fresh memory per group would be
    zeroed by the OS page by page. On CUDA the buffers are page-locked, so the copy off the
    device runs at full speed on a side stream."""

    def __init__(self, device: torch.device, sets: int = 2):
        self.device = device
        self.sets: list[dict[int, torch.Tensor]] = [{} for _ in range(sets)]
        self.turn = 0
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def take(self, layers: list[int], n_tokens: int, width: int) -> dict[int, torch.Tensor]:
        """(n_tokens, width) float16 host tensors, one per layer, from the next set."""
        held = self.sets[self.turn]
        self.turn = (self.turn + 1) % len(self.sets)
        for layer in layers:
            if layer not in held or held[layer].shape[0] < n_tokens or held[layer].shape[1] != width:
                held[layer] = torch.empty((capacity(n_tokens), width), dtype=torch.float16,
                                          pin_memory=self.device.type == "cuda")
        return {layer: held[layer][:n_tokens] for layer in layers}

    def copy_off(self, hidden: dict[int, torch.Tensor],
                 host: dict[int, torch.Tensor]) -> None:
        """Copy the device's states into the host tensors: on the side stream once the
        forward passes that made them are done; returns when the copies have landed."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            for layer, states in hidden.items():
                host[layer].copy_(states, non_blocking=True)
        self.stream.synchronize()


def embed_examples(lm: LoadedModel, encoded: list[Encoded], layers: list[int], max_tokens: int,
                   dtype: str, progress: TokenProgress | None = None,
                   buffers: HostBuffers | None = None) -> dict[int, np.ndarray]:
    """Hidden states of examples, in their order: layer -> (n_tokens, hidden) float16 numpy,
    n_tokens summed over the examples. Every pass (a whole example or a window of one) is
    batched longest first under the token budget. With `buffers` the arrays are views of
    reused host memory (see HostBuffers), valid until the group after next takes it."""
    lengths = [len(e.input_ids) for e in encoded]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    host = None if buffers is None else buffers.take(layers, int(starts[-1]), lm.hidden_size)
    # gathered where the model runs: on a GPU, reordering there and copying each layer off
    # once per group beats copying every batch off and reordering on the host; on the CPU
    # straight into the host buffers
    on_cpu = lm.device.type == "cpu"
    if host is not None and on_cpu:
        hidden = dict(host)
    else:
        hidden = {layer: torch.empty((starts[-1], lm.hidden_size), dtype=torch.float16,
                                     device=lm.device) for layer in layers}
    passes = []  # (example, its window or None for the whole example, is its last pass)
    for i, e in enumerate(encoded):
        if e.pieces is None:
            passes.append((i, None, True))
        else:
            passes += [(i, piece, j == len(e.pieces) - 1) for j, piece in enumerate(e.pieces)]
    sizes = [lengths[i] if piece is None else len(piece.input_ids) for i, piece, _ in passes]
    for batch in token_budget_batches(sizes, max_tokens):
        runs = [encoded[i] if piece is None else piece
                for i, piece, _ in (passes[k] for k in batch)]
        ids, mask = pad(runs, lm.tokenizer.pad_token_id or 0)
        states = forward_layers(lm, ids, mask, layers, dtype, padded=on_cpu)
        place = place_rows if on_cpu else scatter_rows
        place([hidden[layer] for layer in layers], states, [passes[k][:2] for k in batch],
              starts)
        if progress is not None:
            progress.update(sum(passes[k][2] for k in batch), sum(sizes[k] for k in batch),
                            ids.numel())
    if host is None:
        return {layer: states.cpu().numpy() for layer, states in hidden.items()}
    if lm.device.type == "cuda":
        buffers.copy_off(hidden, host)
    elif lm.device.type != "cpu":  # another accelerator: a plain copy into the host buffers
        for layer, states in hidden.items():
            host[layer].copy_(states)
    return {layer: states.numpy() for layer, states in host.items()}


def place_rows(hidden: list[torch.Tensor], states: list[torch.Tensor],
               runs: list[tuple[int, Piece | None]], starts: np.ndarray) -> None:
    """CPU: copy each pass's kept states from the padded batch (per layer (batch, longest,
    hidden)) to its example's rows of `hidden` (per layer (n_tokens, hidden)). A whole
    example is one contiguous slice copy: a memcpy, where torch's index_copy_ of the
    unpadded rows cost 10x as much (two gathers of every row, index arrays built first)."""
    out = [h.numpy() for h in hidden]
    batch = [st.numpy() for st in states]
    for row, (example, piece) in enumerate(runs):
        at = int(starts[example])
        if piece is None:
            n = int(starts[example + 1]) - at
            for o, b in zip(out, batch):
                o[at:at + n] = b[row, :n]
        else:  # a window: only the states no other window gives better
            rows = at + piece.rows[piece.keep]
            for o, b in zip(out, batch):
                o[rows] = b[row, :len(piece.keep)][piece.keep]


def scatter_rows(hidden: list[torch.Tensor], states: list[torch.Tensor],
                 runs: list[tuple[int, Piece | None]], starts: np.ndarray) -> None:
    """On the model's device: the batch's real states (per layer (n_real, hidden), batch
    order) scattered to their examples' rows of `hidden`, one index_copy_ per layer."""
    keep, target = [], []
    for example, piece in runs:
        rows = np.arange(starts[example + 1] - starts[example]) if piece is None else piece.rows
        keep.append(np.ones(len(rows), dtype=bool) if piece is None else piece.keep)
        target.append(starts[example] + rows)
    keep = np.concatenate(keep)
    target = torch.from_numpy(np.concatenate(target)[keep]).to(hidden[0].device)
    whole = bool(keep.all())  # windows drop the states another window gives better
    for h, layer_states in zip(hidden, states):
        h.index_copy_(0, target, layer_states if whole
                      else layer_states[torch.from_numpy(keep).to(h.device)])
