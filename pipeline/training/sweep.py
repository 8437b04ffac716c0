"""Per-layer sweep: one head per cached layer plus a layer mix, trained side by side through
the shared loop (training.loop), so the features are read once per epoch for all heads."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pipeline.devices import resolve_device
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import accuracies, macro_f1, per_class, score
from pipeline.store import Cache, atomic_write, atomic_write_json, check_out_dir
from pipeline.training import plots
from pipeline.training.data import prepare
from pipeline.training.heads import HeadConfig, mix_weights, predict_heads
from pipeline.training.loop import TrainOptions, new_trainee, train
from pipeline.settings import SEQUENCE_KINDS, FitSettings
from pipeline.training.rows import word_forms
from pipeline.training.sequence_fit import sequence_splits
from pipeline.training.sequence_loop import decode_sequences
from pipeline.training.layers import parse_fit_layers
from pipeline.training.subword import load_word_features


def sweep(cache_dir: str, task: str, out: str | Path, **settings) -> dict:
    """Train a `head` on each of `layers` (default, 'all' or 'mix': every cached layer) and on
    the mix of them in lockstep; write sweep.json, layers.png, and per_class.json +
    confusion.png for the best head (by dev word accuracy, or test without a dev split).
    Returns sweep.json's content. `settings` are those of pipeline.settings.FitSettings."""
    s = FitSettings.build("", **settings)
    out_dir = check_out_dir(out)  # before any work
    head, subword, hidden, dropout = s.head, s.subword, s.hidden, s.dropout
    if s.ensemble > 1:
        raise PipelineError("ensemble: sweep trains one head per layer; train an ensemble with "
                            "pipeline fit --ensemble")
    if s.optimizer != "adamw":
        raise PipelineError("sweep trains with --optimizer adamw (lbfgs cannot train its "
                            "layer-mix head); fit single layers to use lbfgs")
    options = TrainOptions(s.epochs, s.lr, s.weight_decay, s.schedule, s.patience,
                           s.batch_size, s.seed, s.optimizer, resolve_device(s.device))
    cache = Cache(cache_dir)
    layers = parse_fit_layers(None if s.layers.strip() == "mix" else s.layers, cache.layers)
    data = prepare(cache, task, s.val_fraction)
    forms = word_forms(cache, data.word_ids, data.example_ids) if s.chars else None
    seq = sequence_splits(data, forms) if head in SEQUENCE_KINDS else None
    features = load_word_features(cache, layers, seq.rows() if seq else data.rows(), subword,
                                  data.word_ids, data.example_ids, s.max_memory)
    width = cache.hidden_size
    torch.manual_seed(s.seed)
    trainees = []
    for j, name in enumerate([*map(str, layers), "mix"]):
        mix = name == "mix"
        config = HeadConfig(head, width * len(layers) if mix else width, len(data.label_names),
                            hidden=hidden if head != "linear" else 0,
                            dropout=dropout if head != "linear" else 0.0,
                            mix_layers=len(layers) if mix else 0,
                            depth=s.depth if seq else 0, crf=s.crf, chars=s.chars)
        trainees.append(new_trainee(name, config, options, slice(None) if mix
                                    else slice(j * width, (j + 1) * width)))
    monitor, test = (seq.monitor, seq.test) if seq else (data.dev or data.test, data.test)
    started = time.perf_counter()
    train(trainees, features, data.labels, data.train_rows, monitor, data.dev is not None,
          options, sequences=(seq.train, seq.monitor_seqs) if seq else None)
    train_seconds = time.perf_counter() - started

    heads = [(t.module, t.columns) for t in trainees]
    if seq:  # sequence heads label every word of the test examples at once
        test_preds = [p[seq.test_seqs.positions(test.rows)]
                      for p in decode_sequences(heads, features, seq.test_seqs,
                                                options.device)[0]]
    else:
        test_preds, _ = predict_heads(heads, features, test.rows, options.device)
    rows = [{"layer": t.name, **accuracies(test.y, y_pred, test.words),
             "macro_f1": macro_f1(test.y, y_pred), "monitor_word_accuracy": t.best_accuracy,
             "best_epoch": t.best_epoch, "epochs": len(t.history)}
            for t, y_pred in zip(trainees, test_preds)]
    best = max(range(len(trainees)), key=lambda i: trainees[i].best_accuracy)
    reference = score(test.y, test_preds[best], test.words, test.n_examples,
                      data.baselines(test))
    result = {
        "task": data.task.name,
        "head": head,
        "subword": subword,
        "split": test.name,
        "monitor": monitor.name,
        "layers": rows,
        "mix_weights": dict(zip(map(str, layers), mix_weights(trainees[-1].module))),
        "baselines": reference["baselines"],
        "unknown": test.unknown,
        "best": {"layer": trainees[best].name, **{k: rows[best][k] for k in
                                                  ("word_accuracy", "token_accuracy",
                                                   "macro_f1")},
                 "per_class": per_class(test.y, test_preds[best], data.label_names)},
        "n_words": reference["n_words"],
        "n_tokens": reference["n_tokens"],
        "train": {"n_tokens": int(len(data.train_rows)), "seconds": round(train_seconds, 3),
                  "heads": len(trainees)},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "sweep.json", result)
    atomic_write_json(out_dir / "per_class.json", result["best"]["per_class"])
    figures = {"layers.png": plots.layers_plot(result),
               "confusion.png": plots.confusion_matrix(
                   test.y, test_preds[best], data.label_names,
                   f"{data.task.name}, best head: layer {trainees[best].name}")}
    for name, figure in figures.items():
        if figure is not None:
            atomic_write(out_dir / name, plots.png_writer(figure))
    return result


def format_table(result: dict) -> str:
    """The sweep as a text table: one row per head, baselines below."""
    lines = [f"{result['task']} ({result['head']} heads), {result['split']} split, "
             f"{result['n_words']:,} words",
             f"{'layer':>8} {'word_acc':>9} {'token_acc':>9} {'macro_f1':>9} "
             f"{result['monitor'] + '_acc':>10} {'epoch':>6}"]
    for row in result["layers"]:
        mark = " *" if row["layer"] == result["best"]["layer"] else ""
        lines.append(f"{row['layer']:>8} {row['word_accuracy']:>9.4f} "
                     f"{row['token_accuracy']:>9.4f} {row['macro_f1']:>9.4f} "
                     f"{row['monitor_word_accuracy']:>10.4f} {row['best_epoch']:>6}{mark}")
    for name, base in result["baselines"].items():
        lines.append(f"{name:>8} {base['word_accuracy']:>9.4f} {base['token_accuracy']:>9.4f}"
                     f"   (baseline)")
    weights = ", ".join(f"{k}: {v:.3f}" for k, v in result["mix_weights"].items())
    lines.append(f"mix weights: {weights}")
    return "\n".join(lines)
