"""Sequence heads: they read the words of one example at a time, padded into a batch, and
label each word from its context. A BiLSTM (the Flair-style tagger) or a few small
self-attention blocks, optionally under a linear-chain CRF (training.crf); one, or an ensemble
of several read as one head (TaggerEnsemble).

Input is (batch, length, in_features) word features with a (batch, length) bool mask of the
real words; output (batch, length, n_labels) float32 emissions (logits, or a CRF's unary
scores). Padding never influences a real word: the BiLSTM runs on packed sequences and
attention masks padded keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline import tasks
from pipeline.settings import ATTENTION_HEADS
from pipeline.training.chars import CharCNN
from pipeline.training.crf import CRF


def joined_linear(linear: nn.Linear, x: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """linear(cat([x, extra], -1)) without building the concatenation: (..., width) cached
    features, which need no gradient, and (..., extra_width) trained ones (or None). On the
    concatenation autograd would compute a gradient for every wide cached column too."""
    if extra is None:
        return linear(x)
    width = x.shape[-1]
    return (nn.functional.linear(x, linear.weight[:, :width], linear.bias)
            + nn.functional.linear(extra, linear.weight[:, width:]))


class BiLSTM(nn.Module):
    """(B, T, width) -> (B, T, 2 * hidden): a linear projection to `hidden` (shared by both
    directions, so wide concatenated layers cost one small matmul), then `depth` stacked
    bidirectional LSTM layers. `extra`, (B, T, extra_width) or None, holds the trailing
    input columns (see joined_linear)."""

    def __init__(self, width: int, hidden: int, depth: int, dropout: float):
        super().__init__()
        self.out_features = 2 * hidden
        self.project = nn.Linear(width, hidden)
        self.forward_layers = nn.ModuleList(
            nn.LSTM(hidden if i == 0 else 2 * hidden, hidden, batch_first=True)
            for i in range(depth))
        self.backward_layers = nn.ModuleList(
            nn.LSTM(hidden if i == 0 else 2 * hidden, hidden, batch_first=True)
            for i in range(depth))
        self.between = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        # padding sits at the end of each row: the forward direction never reads it before a
        # real word, and the backward one runs on each example reversed within its length,
        # several times faster on a CPU than packed sequences
        lengths = mask.sum(1, keepdim=True)
        steps = torch.arange(x.shape[1], device=x.device)[None, :]
        flip = torch.where(mask, lengths - 1 - steps, steps)[:, :, None]
        h = joined_linear(self.project, x, extra)
        for ahead, back in zip(self.forward_layers, self.backward_layers):
            h = self.between(h)
            index = flip.expand(-1, -1, h.shape[-1])
            reverse = back(h.gather(1, index))[0]
            h = torch.cat([ahead(h)[0], reverse.gather(1, flip.expand_as(reverse))], -1)
        return h


def sinusoids(length: int, width: int, device: torch.device) -> torch.Tensor:
    """(length, width) sinusoidal positions (Vaswani et al., 2017): any length, no weights."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[:width // 2])
    return table


class Attention(nn.Module):
    """(B, T, width) -> (B, T, hidden): a projection plus sinusoidal positions, then `depth`
    pre-norm transformer blocks of ATTENTION_HEADS heads over the example's words; `extra` as
    for BiLSTM."""

    def __init__(self, width: int, hidden: int, depth: int, dropout: float):
        super().__init__()
        self.out_features = hidden
        self.project = nn.Linear(width, hidden)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden, ATTENTION_HEADS, dim_feedforward=2 * hidden,
                                       dropout=dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dropout(joined_linear(self.project, x, extra))
        h = h + sinusoids(x.shape[1], self.out_features, x.device)
        for block in self.blocks:
            h = block(h, src_key_padding_mask=~mask)
        return self.norm(h)


class SequenceTagger(nn.Module):
    """Optional layer mix (training.heads.ScalarMix), optional character features of each word
    (training.chars) joined to it, an encoder (BiLSTM or attention, with dropout after its
    input projection) and a linear layer to the labels, plus a linear skip from the input to
    the labels; optionally a CRF over them."""

    def __init__(self, config, mix: nn.Module | None, width: int):
        super().__init__()
        self.mix = mix
        self.chars = CharCNN() if config.chars else None
        width += self.chars.out_features if self.chars is not None else 0
        self.dropout = nn.Dropout(config.dropout)
        encoder = BiLSTM if config.kind == "bilstm" else Attention
        self.encoder = encoder(width, config.hidden, config.depth, config.dropout)
        self.out = nn.Linear(self.encoder.out_features, config.n_labels)
        # a linear probe's path around the encoder: the head starts where a probe ends and
        # the encoder learns what context adds
        self.skip = nn.Linear(width, config.n_labels)
        self.crf = CRF(config.n_labels) if config.crf else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                chars: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T, in_features) features, (B, T) bool mask -> (B, T, n_labels) emissions. A
        head with chars also takes the batch's (U, MAX_CHARS) character ids of its distinct
        word forms and the (B, T) index of each word's form (Sequences.gather_chars)."""
        x = x.float()  # LSTM and attention kernels run in float32 on every device
        if self.mix is not None:
            x = self.mix(x.reshape(-1, x.shape[-1])).view(*x.shape[:2], -1)
        if self.chars is not None:
            if chars is None:
                raise ValueError("this head reads character ids of each word (chars=...)")
            form_ids, form_index = chars
            # index_select, not x[index]: the latter's CPU backward adds repeated forms'
            # gradients in a thread-dependent order, so two runs would train different weights
            words = self.chars(form_ids).index_select(0, form_index.reshape(-1))
            words = words.view(*form_index.shape, -1)
        else:
            words = None
        # the character features join the wide cached ones inside the projections
        # (joined_linear), and dropout acts inside the encoder, after its projection: a
        # concatenation or dropout on the wide input would cost more than the encoder itself
        return (self.out(self.dropout(self.encoder(x, mask, words)))
                + joined_linear(self.skip, x, words))

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        """Summed loss of a batch: cross-entropy per labelled word, or the CRF's negative
        log-likelihood of the label paths ((B, T) labels, IGNORE where unlabelled)."""
        if self.crf is not None:
            return self.crf.nll(emissions, labels, mask)
        return nn.functional.cross_entropy(emissions[mask], labels[mask],
                                           ignore_index=tasks.IGNORE, reduction="sum")

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) int64 labels and (B, T, n_labels) float32 probabilities: argmax and softmax,
        or under a CRF the Viterbi path and the per-word marginals."""
        if self.crf is not None:
            return self.crf.viterbi(emissions, mask), self.crf.marginals(emissions, mask)
        return emissions.argmax(-1), emissions.softmax(-1)


class TaggerEnsemble(nn.Module):
    """Several SequenceTaggers of one config (`--ensemble N`; fit trains each apart, from its
    own seed), read as one head: a deep ensemble (Lakshminarayanan et al., 2017, arXiv:1612.01474).
    Emissions are (N, B, T, n_labels), one slice per member. Trained as one module (as the
    control head of --selectivity is), each member learns from its own loss;
    the ensemble labels by the members' mean probabilities, which under a CRF are the
    per-word marginals (so the labels are each word's best, not one Viterbi path)."""

    def __init__(self, members: list[SequenceTagger]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                chars: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        return torch.stack([member(x, mask, chars) for member in self.members])

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        """The members' mean summed loss: each member's gradient is that of its own loss (the
        1/N scale does not change an AdamW step), and the figure compares with one head's."""
        return torch.stack([member.loss(own, labels, mask)
                            for member, own in zip(self.members, emissions)]).mean()

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) argmax of the mean probabilities, and those (B, T, n_labels) probabilities."""
        probabilities = torch.stack([member.decode(own, mask)[1]
                                     for member, own in zip(self.members, emissions)]).mean(0)
        return probabilities.argmax(-1), probabilities


SEQUENCE_MODULES = (SequenceTagger, TaggerEnsemble)  # what reads whole examples
