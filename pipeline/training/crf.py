"""A linear-chain CRF over per-word emissions: negative log-likelihood (also of partly
labelled paths), Viterbi decoding and forward-backward marginals.

Written here rather than taken from pytorch-crf or torchcrf: those are unmaintained, have no
marginals and no partial labels, and the whole algorithm is a few dozen lines of torch.

Shapes: emissions (B, T, C) float32, mask (B, T) bool with each row's real positions first
(padding at the end, at least one real position), labels (B, T) int64 with IGNORE where a
word has no label.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline import tasks


class CRF(nn.Module):
    """Transition scores between labels plus start and end scores."""

    def __init__(self, n_labels: int):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(n_labels, n_labels))  # [from, to]
        self.start = nn.Parameter(torch.zeros(n_labels))
        self.end = nn.Parameter(torch.zeros(n_labels))

    def _forward(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """Forward log-scores alpha_t, (B, C) each, for t = 0 .. T-1; at padding the last
        real position's alpha is carried on."""
        alpha = self.start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha[:, :, None] + self.transitions, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], step, alpha)
            alphas.append(alpha)
        return alphas

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) log of the summed exp-scores of every label path."""
        return torch.logsumexp(self._forward(emissions, mask)[-1] + self.end, dim=1)

    def nll(self, emissions: torch.Tensor, labels: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
        """Summed negative log-likelihood of the label paths: log Z minus the log-sum over the
        paths that agree with every given label (unlabelled words may take any label)."""
        free = (labels == tasks.IGNORE) | ~mask
        allowed = free[:, :, None] | (nn.functional.one_hot(
            labels.clamp(min=0), emissions.shape[-1]).bool())
        constrained = emissions.masked_fill(~allowed, float("-inf"))
        return (self.log_partition(emissions, mask)
                - self.log_partition(constrained, mask)).sum()

    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 best label path; at padding it repeats the last real label."""
        n_labels = emissions.shape[-1]
        score = self.start + emissions[:, 0]
        keep = torch.arange(n_labels, device=emissions.device).expand_as(score)
        pointers = []
        for t in range(1, emissions.shape[1]):
            best, pointer = (score[:, :, None] + self.transitions).max(dim=1)
            score = torch.where(mask[:, t, None], best + emissions[:, t], score)
            pointers.append(torch.where(mask[:, t, None], pointer, keep))
        last = (score + self.end).argmax(-1)
        path = [last]
        for pointer in reversed(pointers):
            last = pointer.gather(1, last[:, None])[:, 0]
            path.append(last)
        return torch.stack(path[::-1], dim=1)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, C) probability of each label at each word, summed over all paths
        (forward-backward); rows at padding are meaningless."""
        alphas = self._forward(emissions, mask)
        beta = self.end.expand_as(alphas[0])
        betas = [beta]
        for t in range(emissions.shape[1] - 2, -1, -1):
            step = torch.logsumexp(self.transitions + (emissions[:, t + 1] + beta)[:, None, :],
                                   dim=2)
            beta = torch.where(mask[:, t + 1, None], step, self.end.expand_as(step))
            betas.append(beta)
        log_z = torch.logsumexp(alphas[-1] + self.end, dim=1)
        scores = torch.stack(alphas, 1) + torch.stack(betas[::-1], 1) - log_z[:, None, None]
        return scores.exp()
