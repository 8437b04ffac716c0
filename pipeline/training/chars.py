"""Character features of each word's form, for sequence heads (`--chars`).

The uncased tokenizer drops case and cuts an unseen word into pieces; the word's spelling keeps
both. As in Lample et al. (2016), Ma & Hovy (2016) and Flair's taggers, a small character
network reads the word form, and its vector joins the word's cached features. The form comes
from the cache (example texts and char spans), so this needs no transformer either.

char_table: word forms -> the character ids of each distinct form and each word's form;
CharCNN: (n_forms, MAX_CHARS) ids -> (n_forms, CharCNN.out_features) float32. A batch runs the
network once per distinct form (a batch of 2,048 English words holds about half as many).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

MAX_CHARS = 24  # ids per word: BEGIN, up to 22 characters, END
# code points hash into a fixed id range: no character vocabulary to build or save, and the
# few collisions fall on rare characters
CHAR_BUCKETS = 4096
PAD, BEGIN, END = 0, 1, 2
CHAR_DIM = 24  # embedding width of one character
CHAR_FEATURES = 64  # convolution filters, max-pooled over the word
KERNEL_WIDTH = 3  # character trigrams; the markers make the first and last ones prefix/suffix


def char_table(forms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The (n_forms, MAX_CHARS) int64 ids of each distinct form (BEGIN, each character's id,
    END, then PAD) and the (len(forms),) int64 index of each word's form in it. A longer word
    keeps its first and last characters (where prefixes and suffixes are)."""
    unique, owner = np.unique(np.array(list(forms), dtype=object).astype(str),
                              return_inverse=True)
    keep = MAX_CHARS - 2
    table = np.full((len(unique), MAX_CHARS), PAD, dtype=np.int64)
    for i, form in enumerate(unique.tolist()):
        if len(form) > keep:
            form = form[:keep // 2] + form[len(form) - (keep - keep // 2):]
        ids = [BEGIN] + [3 + ord(c) % (CHAR_BUCKETS - 3) for c in form] + [END]
        table[i, :len(ids)] = ids
    return table, owner.reshape(-1).astype(np.int64)


class CharCNN(nn.Module):
    """(n, MAX_CHARS) int64 character ids -> (n, CHAR_FEATURES) float32: embedded characters,
    a trigram convolution, max over the word's positions (padding excluded), ReLU
    (Ma & Hovy, 2016)."""

    out_features = CHAR_FEATURES

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(CHAR_BUCKETS, CHAR_DIM, padding_idx=PAD)
        self.conv = nn.Conv1d(CHAR_DIM, CHAR_FEATURES, KERNEL_WIDTH, padding=KERNEL_WIDTH // 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        width = int((ids != PAD).sum(1).max()) if len(ids) else 1  # no all-padding columns
        ids = ids[:, :max(1, width)]
        x = self.embed(ids).transpose(1, 2)  # (n, CHAR_DIM, width)
        pooled = self.conv(x).masked_fill((ids == PAD)[:, None, :], float("-inf")).amax(-1)
        return torch.relu(pooled)
