"""Train a head on a cache: no transformer, only stored float16 features and labels.
The cache is only read; the head directory is written as a whole at the end."""

from __future__ import annotations

import csv
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline import tasks
from pipeline.devices import resolve_device
from pipeline.evaluation.metrics import accuracies, below_lookup_warnings, score
from pipeline.evaluation.spans import span_metrics
from pipeline.store import Cache
from pipeline.training import plots
from pipeline.training.data import EvalSplit, TaskData, prepare
from pipeline.training.features import FeatureSource
from pipeline.training.atomic_dir import check_target
from pipeline.training.heads import (HEAD_DIR_FILES, HeadConfig, SavedHead, mix_weights,
                                     predict_rows)
from pipeline.training.loop import Trainee, TrainOptions, new_trainee, train
from pipeline.training.rows import word_forms
from pipeline.training.sequence import TaggerEnsemble
from pipeline.training.sequence_fit import (SequenceSplits, ensemble_accuracy, probe_trainee,
                                            sequence_splits)
from pipeline.training.sequence_loop import decode_sequences
from pipeline.settings import SEQUENCE_KINDS, FitSettings
from pipeline.training.layers import parse_head_layers
from pipeline.training.subword import load_word_features


def fit(cache_dir: str, task: str, out: str | Path, *,
        on_epoch: Callable[[dict], None] | None = None, **settings) -> dict:
    """Train a head on `cache_dir`'s features for `task`; write the head directory `out`
    (weights, head.json, lookup.json, metrics.json, history.csv, loss.png). Returns the metrics.

    A cache with train/dev/test splits trains on train, early-stops on dev (`patience`
    epochs) and reports test; a plain-text cache holds out its last `val_fraction` of
    examples and trains `epochs` epochs. `layers`: one index, a list (concatenated), 'all',
    or 'mix' (learned softmax mix of every cached layer). With `selectivity` a second head
    learns the control task and metrics report the difference. Features stay in memory
    when they fit in `max_memory` (default: half the available memory), else they are
    streamed from the shards within that budget (training.stream). `optimizer`: adamw
    (mini-batches of `batch_size` tokens) or lbfgs (full batch, linear heads).
    `on_epoch(record)` gets each epoch's history.csv row as it is made. `settings` are those
    of pipeline.settings.FitSettings. The metrics written hold no timings (a rerun writes the
    same bytes); the returned ones add them under "train".
    """
    s = FitSettings.build("", **settings)  # every value checked before any work
    check_target(out, HEAD_DIR_FILES)  # and where the head goes
    head, subword = s.head, s.subword
    options = TrainOptions(s.epochs, s.lr, s.weight_decay, s.schedule, s.patience,
                           s.batch_size, s.seed, s.optimizer, resolve_device(s.device))
    cache = Cache(cache_dir)
    layer_list, mix = parse_head_layers(s.layers, cache.layers)
    data = prepare(cache, task, s.val_fraction)
    sequence = head in SEQUENCE_KINDS
    forms = word_forms(cache, data.word_ids, data.example_ids) if s.chars else None
    seq = sequence_splits(data, forms) if sequence else None
    features = load_word_features(cache, layer_list, seq.rows() if seq else data.rows(), subword,
                                  data.word_ids, data.example_ids, s.max_memory)
    config = HeadConfig(head, features.in_features, len(data.label_names),
                        hidden=s.hidden if head != "linear" else 0,
                        dropout=s.dropout if head != "linear" else 0.0,
                        mix_layers=len(layer_list) if mix else 0,
                        depth=s.depth if sequence else 0, crf=s.crf, chars=s.chars,
                        ensemble=s.ensemble)
    monitor, test = (seq.monitor, seq.test) if seq else (data.dev or data.test, data.test)
    started = time.perf_counter()
    # an ensemble's members train apart, member k exactly as `--seed seed+k` trains one head:
    # their own batch orders make them differ more, and score higher, than lockstep members
    # (docs/benchmarks.md, "Three heads averaged")
    runs = [train_one(replace(config, ensemble=1), replace(options, seed=s.seed + k), features,
                      data, seq, monitor, member=k + 1 if s.ensemble > 1 else 0,
                      on_epoch=on_epoch)
            for k in range(s.ensemble)]
    train_seconds = time.perf_counter() - started
    trainees = runs[0]  # the head, and its linear probe (trained beside the first member only)
    module = (trainees[0].module if s.ensemble == 1
              else TaggerEnsemble([run[0].module for run in runs]).eval())
    history = [({"member": k + 1} | record) if s.ensemble > 1 else record
               for k, run in enumerate(runs) for record in run[0].history]
    best_epoch = (trainees[0].best_epoch if s.ensemble == 1
                  else [run[0].best_epoch for run in runs])

    y_preds = predict_split([(module, slice(None))] + [(t.module, t.columns)
                                                       for t in trainees[1:]],
                            features, test, seq, options.device)
    baselines = data.baselines(test)
    if seq:
        baselines["linear_probe"] = (y_preds[1], {"best_epoch": trainees[1].best_epoch,
                                                  "epochs": len(trainees[1].history)})
    metrics = score(test.y, y_preds[0], test.words, test.n_examples, baselines)
    if spans := span_metrics(data.label_names, test.y, y_preds[0], data.example_ids[test.rows],
                             {"linear_probe": y_preds[1]} if seq else {}):
        metrics["spans"] = spans
    metrics["split"] = data.test.name
    metrics["unknown"] = data.test.unknown
    metrics["head"] = {"kind": head, "layers": "mix" if mix else layer_list, "subword": subword}
    if sequence:
        metrics["head"] |= {"hidden": s.hidden, "depth": s.depth, "crf": s.crf,
                            "chars": s.chars, "rows": "words"}
    if mix:
        metrics["head"]["mix_weights"] = dict(zip(map(str, layer_list), mix_weights(module)))
    if data.dev is not None and s.ensemble == 1:
        metrics["dev"] = {"best_epoch": best_epoch, "word_accuracy":
                          history[best_epoch - 1]["val_word_accuracy"]}
    elif data.dev is not None:
        metrics["dev"] = {"word_accuracy": ensemble_accuracy(module, features, seq,
                                                             options.device),
                          "members": [{"seed": s.seed + k, "best_epoch": run[0].best_epoch,
                                       "word_accuracy": run[0].best_accuracy}
                                      for k, run in enumerate(runs)]}
    metrics["train"] = {"n_tokens": int(len(data.train_rows)), "epochs": len(history),
                        "feature_bytes": features.nbytes}
    if s.selectivity:
        metrics["selectivity"] = control_selectivity(data, config, features, metrics, options,
                                                     seq)
    if warnings := below_lookup_warnings(metrics):
        metrics["warnings"] = warnings

    saved = SavedHead(module.cpu(), config, data.task.name, data.label_names,
                      layer_list, cache.fingerprint, data.majority, data.lookup_record(), subword)
    companions = {"history.csv": lambda path: write_history(path, history)}
    figure = plots.loss_curve(history, f"{data.task.name}, {head} head on "
                                       f"{'mix of ' if mix else ''}layers {layer_list}")
    if figure is not None:
        companions["loss.png"] = plots.png_writer(figure)
    saved.save(out, metrics, companions=companions, extra={
        "fit": s.model_dump(exclude={"task", "device", "max_memory"}) | {"best_epoch": best_epoch}})
    timing = {"seconds": round(train_seconds, 3), "us_per_token": round(
        1e6 * train_seconds / max(1, len(history) * len(data.train_rows)), 4)}
    return metrics | {"train": metrics["train"] | timing}


def train_one(config: HeadConfig, options: TrainOptions, features: FeatureSource,
              data: TaskData, seq: SequenceSplits | None, monitor: EvalSplit, member: int,
              on_epoch: Callable[[dict], None] | None) -> list[Trainee]:
    """One head from torch seed options.seed, and beside a sequence head its linear probe,
    trained in lockstep (an ensemble's later members train without it). `on_epoch` gets the
    head's history records, each with the head's `member` number when it is one of an
    ensemble's (1..N; 0 for a lone head)."""
    torch.manual_seed(options.seed)
    trainee = new_trainee("head", config, options)
    # the probe is always built: its initialisation draws from the global seed, so the head's
    # dropout draws then match a lone head's; training it draws nothing
    probe = probe_trainee(config, options) if seq else None
    trainees = [trainee] + ([probe] if probe is not None and member <= 1 else [])

    def head_epoch(t: Trainee, record: dict) -> None:
        if t is trainee and on_epoch is not None:
            on_epoch({"member": member} | record if member else record)
    train(trainees, features, data.labels, data.train_rows, monitor, data.dev is not None,
          options, on_epoch=head_epoch, sequences=(seq.train, seq.monitor_seqs) if seq else None)
    return trainees


def predict_split(heads: list[tuple[nn.Module, slice]], features: FeatureSource,
                  split: EvalSplit, seq: SequenceSplits | None, device: torch.device) -> list:
    """Each (module, columns) head's (n,) labels of the split's rows: row by row, or example
    by example."""
    if seq is None:
        return [predict_rows(module, features, split.rows, device) for module, _ in heads]
    preds, _, _ = decode_sequences(heads, features, seq.test_seqs, device)
    return [p[seq.test_seqs.positions(split.rows)] for p in preds]


def control_selectivity(data: TaskData, config: HeadConfig, features: FeatureSource,
                        metrics: dict, options: TrainOptions,
                        seq: SequenceSplits | None = None) -> dict:
    """Train the same head on the control task (Hewitt & Liang, 2019: each type a fixed random
    label) and report selectivity = task word accuracy - control word accuracy on test."""
    control = tasks.control_labels(data.keys, data.labels.numpy(), data.train_rows,
                                   seed=options.seed)
    watched = seq.monitor if seq else data.dev or data.test
    monitor = EvalSplit("control", watched.rows, control[watched.rows], watched.words,
                        watched.n_examples, {})
    torch.manual_seed(options.seed)
    trainee = new_trainee("control", config, options)
    train([trainee], features, torch.from_numpy(control), data.train_rows, monitor,
          data.dev is not None, options,
          sequences=(seq.train, seq.monitor_seqs) if seq else None)
    test = seq.test if seq else data.test
    y_control = control[test.rows]
    y_pred = predict_split([(trainee.module, trainee.columns)], features, test, seq,
                           options.device)[0]
    control_accuracy = accuracies(y_control, y_pred, test.words)
    return {"control_word_accuracy": round(control_accuracy["word_accuracy"], 6),
            "control_token_accuracy": round(control_accuracy["token_accuracy"], 6),
            "selectivity": round(metrics["word_accuracy"] - control_accuracy["word_accuracy"], 6)}


def write_history(path: Path, history: list[dict]) -> None:
    """history.csv: one row per epoch, the columns of the loop's records."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
