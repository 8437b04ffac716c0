"""What fit and sweep add for sequence heads: examples of word rows for each split, and the
linear probe trained alongside on the same features, so that a sequence head's gain over a
probe is in its metrics."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from pipeline import tasks
from pipeline.evaluation.metrics import accuracies
from pipeline.training.data import EvalSplit, TaskData
from pipeline.training.features import FeatureSource
from pipeline.training.examples import Sequences
from pipeline.training.heads import HeadConfig
from pipeline.training.loop import TrainOptions, Trainee, new_trainee
from pipeline.training.sequence_loop import decode_sequences

PROBE_LR = 3e-3  # the linear head's default learning rate (pipeline.settings.FitSettings)


@dataclass
class SequenceSplits:
    """Word rows as examples: training examples, and the monitor and test splits restricted
    to word rows (sequence heads label words; a subtoken task's other pieces are not scored)."""

    train: Sequences
    monitor: EvalSplit
    monitor_seqs: Sequences
    test: EvalSplit
    test_seqs: Sequences

    def rows(self) -> np.ndarray:
        """Every row whose features training and scoring read."""
        return np.concatenate([self.train.rows, self.monitor_seqs.rows, self.test_seqs.rows])


def word_split(split: EvalSplit, first: np.ndarray) -> EvalSplit:
    """`split` without the rows that do not start a word ((n_tokens,) bool `first`)."""
    keep = first[split.rows]
    return replace(split, rows=split.rows[keep], y=split.y[keep], words=split.words[keep])


def sequence_splits(data: TaskData, forms: list[str | None] | None = None) -> SequenceSplits:
    """The splits as examples of word rows; with (n_tokens,) `forms`, each example carries its
    words' character ids (training.chars)."""
    first = tasks.first_subtokens(data.word_ids, data.example_ids)
    monitor = word_split(data.dev or data.test, first)
    test = word_split(data.test, first)

    def seqs(rows: np.ndarray) -> Sequences:
        words = Sequences.words_of(rows, data.word_ids, data.example_ids)
        return words if forms is None else words.with_forms(
            [forms[row] for row in words.rows.tolist()])
    return SequenceSplits(seqs(data.train_rows), monitor, seqs(monitor.rows), test,
                          seqs(test.rows))


def probe_trainee(config: HeadConfig, options: TrainOptions) -> Trainee:
    """A linear head (a linear mix head when the sequence head mixes layers) on the sequence
    head's features, with the linear default learning rate and no weight decay."""
    probe = HeadConfig("linear", config.in_features, config.n_labels,
                       mix_layers=config.mix_layers)
    return new_trainee("linear_probe", probe, replace(options, lr=PROBE_LR, weight_decay=0.0))


def ensemble_accuracy(module: nn.Module, features: FeatureSource, seq: SequenceSplits,
                      device: torch.device) -> float:
    """An ensemble's word accuracy on the monitor split (its members were each watched alone)."""
    preds, _, _ = decode_sequences([(module, slice(None))], features, seq.monitor_seqs, device)
    y_pred = preds[0][seq.monitor_seqs.positions(seq.monitor.rows)]
    return round(accuracies(seq.monitor.y, y_pred, seq.monitor.words)["word_accuracy"], 6)
