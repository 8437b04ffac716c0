"""Labels and probabilities of word rows under any saved head: the one function predict and
evaluate call, whatever the head kind."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.training.examples import Sequences
from pipeline.training.features import FeatureSource
from pipeline.training.heads import SavedHead, head_logits, is_sequence
from pipeline.training.sequence_loop import decode_sequences

ROW_BATCH = 16384  # rows per forward pass of a row head


def decode_words(head: SavedHead, features: FeatureSource, rows: np.ndarray,
                 example_ids: np.ndarray, device: str | torch.device = "cpu",
                 forms=None) -> tuple[np.ndarray, np.ndarray]:
    """(len(rows),) int64 labels and (len(rows), n_labels) float32 probabilities of `rows`.

    `features.batch(rows)` gives each row's word features as the head reads them (pooled per
    head.subword by the caller, e.g. with training.word_features). `example_ids` is (len(rows),):
    consecutive rows with the same id are one example, its words in order. Linear and MLP
    heads label each row alone (softmax probabilities); sequence heads read each example whole:
    argmax and softmax of their emissions, or under a CRF the Viterbi path with the per-word
    marginals from forward-backward. A head with chars also reads `forms`, the (len(rows),)
    word form of each row.
    """
    rows = np.asarray(rows, dtype=np.int64)
    example_ids = np.asarray(example_ids)
    if len(rows) != len(example_ids):
        raise ValueError(f"{len(rows)} rows but {len(example_ids)} example ids")
    n_labels = head.config.n_labels
    if not len(rows):
        return np.empty(0, np.int64), np.empty((0, n_labels), np.float32)
    module = head.module.eval()
    if is_sequence(head.config):
        seqs = Sequences.from_runs(rows, example_ids)
        if head.config.chars:
            if forms is None:
                raise ValueError("a head with chars needs the word form of every row (forms)")
            seqs = seqs.with_forms(forms)
        preds, probs, _ = decode_sequences([(module, slice(None))], features, seqs, device,
                                           probabilities=True)
        return preds[0], probs[0]
    labels = np.empty(len(rows), np.int64)
    probs = np.empty((len(rows), n_labels), np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows), ROW_BATCH):
            logits = head_logits(module, features.batch(rows[start:start + ROW_BATCH], device))
            labels[start:start + len(logits)] = logits.argmax(-1).cpu().numpy()
            probs[start:start + len(logits)] = logits.softmax(-1).cpu().numpy()
    return labels, probs
