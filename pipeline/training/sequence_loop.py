"""Epochs and scoring over whole examples (training.examples), for training.loop.

Sequence heads (training.sequence) take each padded batch of examples; row heads trained
alongside (the linear probe beside a sequence head) take the same batch's real words as rows,
so one gather of the features serves both.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline import tasks
from pipeline.training.examples import Sequences
from pipeline.training.features import FeatureSource
from pipeline.training.heads import head_logits
from pipeline.training.sequence import SEQUENCE_MODULES


def batch_loss(module: nn.Module, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor,
               flat_y: torch.Tensor, chars: tuple | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed loss of one head on a padded batch ((B, T, F) x, (B, T) mask and labels, (n,)
    labels of the real words, the words' characters (Sequences.gather_chars) or None), and a
    sequence head's emissions (None for a row head)."""
    if isinstance(module, SEQUENCE_MODULES):
        emissions = module(x, mask, chars)
        return module.loss(emissions, y, mask), emissions
    logits = head_logits(module, x[mask])
    return nn.functional.cross_entropy(logits, flat_y, ignore_index=tasks.IGNORE,
                                       reduction="sum"), logits


def padded_labels(labels: torch.Tensor, seqs: Sequences, positions: np.ndarray,
                  mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) labels of a batch, IGNORE at padding, and the (n,) labels of its real words."""
    flat = labels[seqs.rows[positions]].to(mask.device)
    y = torch.full(mask.shape, tasks.IGNORE, dtype=torch.int64, device=mask.device)
    y[mask] = flat
    return y, flat


def sequence_epoch(trainees: list, features: FeatureSource, labels: torch.Tensor,
                   seqs: Sequences, budget: int, generator: torch.Generator,
                   device: torch.device) -> list[float]:
    """One pass over the examples in batches of at most `budget` padded words; every trainee
    (training.loop.Trainee) steps on each batch. Returns each one's mean loss per labelled
    word."""
    for trainee in trainees:
        trainee.module.train()
    totals = [torch.zeros((), device=device) for _ in trainees]
    n_labelled = _epoch(trainees, totals, features, labels, seqs, budget, generator, device)
    for trainee in trainees:
        trainee.module.eval()
    return [total.item() / max(1, n_labelled) for total in totals]


def _epoch(trainees: list, totals: list[torch.Tensor], features: FeatureSource,
           labels: torch.Tensor, seqs: Sequences, budget: int, generator: torch.Generator,
           device: torch.device) -> int:
    """sequence_epoch's batches; adds each trainee's summed loss to `totals`, returns the
    number of labelled words."""
    n_labelled = 0
    for batch in seqs.epoch_batches(features, budget, generator):
        x, mask, positions = seqs.gather(features, batch, device)
        chars = seqs.gather_chars(positions, mask)
        y, flat_y = padded_labels(labels, seqs, positions, mask)
        n = int((flat_y != tasks.IGNORE).sum())
        if not n:
            continue
        n_labelled += n
        for trainee, total in zip(trainees, totals):
            loss, _ = batch_loss(trainee.module, x[..., trainee.columns], mask, y, flat_y,
                                 chars)
            trainee.optimizer.zero_grad(set_to_none=True)
            (loss / n).backward()
            trainee.optimizer.step()
            total += loss.detach()
    return n_labelled


def decode_sequences(heads: list[tuple[nn.Module, slice]], features: FeatureSource,
                     seqs: Sequences, device: str | torch.device = "cpu",
                     labels: torch.Tensor | None = None, budget: int = 8192,
                     probabilities: bool = False
                     ) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """Each head's labels for every row of `seqs` ((n_rows,) int64, in seqs.rows order), its
    (n_rows, n_labels) float32 probabilities when asked (else empty lists), and with `labels`
    each head's mean loss per labelled word (else an empty list). Sequence heads decode each
    example (Viterbi under a CRF); row heads label each row."""
    device = torch.device(device)
    preds = [np.empty(len(seqs.rows), dtype=np.int64) for _ in heads]
    probs: list[np.ndarray] = []
    totals = [0.0 for _ in heads]
    n_labelled = 0
    with torch.inference_mode():
        for batch in seqs.in_order(budget):
            x, mask, positions = seqs.gather(features, batch, device)
            chars = seqs.gather_chars(positions, mask)
            y, flat_y = (padded_labels(labels, seqs, positions, mask) if labels is not None
                         else (None, None))
            if labels is not None:
                n_labelled += int((flat_y != tasks.IGNORE).sum())
            for i, (module, columns) in enumerate(heads):
                xs = x[..., columns]
                if isinstance(module, SEQUENCE_MODULES):
                    emissions = module(xs, mask, chars)
                    best, prob = module.decode(emissions, mask)
                    best, prob = best[mask], prob[mask]
                    if labels is not None:
                        totals[i] += module.loss(emissions, y, mask).item()
                else:
                    logits = head_logits(module, xs[mask])
                    best, prob = logits.argmax(-1), logits.softmax(-1)
                    if labels is not None:
                        totals[i] += nn.functional.cross_entropy(
                            logits, flat_y, ignore_index=tasks.IGNORE, reduction="sum").item()
                preds[i][positions] = best.cpu().numpy()
                if probabilities:
                    if len(probs) <= i:
                        probs.append(np.empty((len(seqs.rows), prob.shape[-1]), np.float32))
                    probs[i][positions] = prob.float().cpu().numpy()
    losses = [total / max(1, n_labelled) for total in totals] if labels is not None else []
    return preds, probs, losses
