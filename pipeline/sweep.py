"""Per-layer sweep: one head per cached layer plus a layer mix, trained side by side.

Every training batch is gathered from the cache's features once, as all layers side by
side, and each head takes its own layer's columns of it; so the sweep reads the features
once per epoch for all heads, where fitting the layers one after the other reads them
once per head.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import tasks
from pipeline.devices import resolve_device
from pipeline.evaluate import accuracies, macro_f1, per_class, score
from pipeline.fit import TaskData, make_optimizer, make_schedule, prepare
from pipeline.heads import HEAD_KINDS, HeadConfig, build_head, head_logits, mix_weights
from pipeline.store import Cache, CacheError, atomic_write, atomic_write_json
from pipeline.stream import epoch_order
from pipeline.subword import load_word_features


@dataclass
class Probe:
    """One head of the sweep and the columns of the all-layers batch it reads."""

    name: str  # the layer index, or "mix"
    columns: slice
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    active: bool = True
    best_accuracy: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    epochs: int = 0


def predict_all(probes: list[Probe], features, rows: np.ndarray, device: torch.device,
                batch_size: int = 16384) -> list[np.ndarray]:
    """Every probe's argmax labels for `rows`, from one gather of the rows' features."""
    preds = [np.empty(len(rows), dtype=np.int64) for _ in probes]
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            x = features.batch(rows[start:start + batch_size], device)
            for probe, pred in zip(probes, preds):
                logits = head_logits(probe.module, x[:, probe.columns])
                pred[start:start + len(x)] = logits.argmax(-1).cpu()
    return preds


def sweep(cache_dir: str, task: str, out: str, head: str = "linear", hidden: int = 512,
          dropout: float = 0.1, subword: str = "first", epochs: int = 10, lr: float = 3e-3,
          weight_decay: float = 0.0, schedule: str = "constant", patience: int = 3,
          batch_size: int = 4096, seed: int = 0, val_fraction: float = 0.1,
          device: str = "auto", max_memory: str | int | None = None) -> dict:
    """Train a `head` on each cached layer and on the mix of all of them in lockstep; write
    sweep.json, layers.png, and per_class.json + confusion.png for the best head (by dev
    word accuracy, or test without a dev split). Returns sweep.json's content."""
    if head not in HEAD_KINDS:
        raise CacheError(f"unknown --head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
    cache = Cache(cache_dir)
    data = prepare(cache, task, val_fraction)
    torch_device = resolve_device(device)
    layers = cache.layers
    features = load_word_features(cache, layers, data.rows(), subword, data.word_ids,
                                  data.example_ids, max_memory)
    width = cache.hidden_size
    torch.manual_seed(seed)
    probes = []
    for j, name in enumerate([*map(str, layers), "mix"]):
        mix = name == "mix"
        config = HeadConfig(head, width * len(layers) if mix else width, len(data.label_names),
                            hidden=hidden if head == "mlp" else 0,
                            dropout=dropout if head == "mlp" else 0.0,
                            mix_layers=len(layers) if mix else 0)
        module = build_head(config).to(torch_device)
        optimizer = make_optimizer(module, lr, weight_decay)
        probes.append(Probe(name, slice(None) if mix else slice(j * width, (j + 1) * width),
                            module, optimizer, make_schedule(optimizer, schedule, epochs)))

    monitor = data.dev or data.test
    early_stop = data.dev is not None
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        active = [p for p in probes if p.active]
        if not active:
            break
        train_lockstep(active, features, data, batch_size, generator, torch_device)
        for probe, y_pred in zip(active, predict_all(active, features, monitor.rows,
                                                     torch_device)):
            probe.scheduler.step()
            probe.epochs = epoch
            accuracy = accuracies(monitor.y, y_pred, monitor.words)["word_accuracy"]
            if not early_stop:
                probe.best_accuracy, probe.best_epoch = accuracy, epoch
            elif accuracy > probe.best_accuracy:
                probe.best_accuracy, probe.best_epoch = accuracy, epoch
                probe.best_state = {k: v.detach().clone()
                                    for k, v in probe.module.state_dict().items()}
            elif epoch - probe.best_epoch >= patience:
                probe.active = False
    train_seconds = time.perf_counter() - started
    for probe in probes:
        if probe.best_state is not None:
            probe.module.load_state_dict(probe.best_state)
        probe.module.eval()

    test = data.test
    test_preds = predict_all(probes, features, test.rows, torch_device)
    rows = []
    for probe, y_pred in zip(probes, test_preds):
        rows.append({"layer": probe.name, **accuracies(test.y, y_pred, test.words),
                     "macro_f1": macro_f1(test.y, y_pred),
                     "monitor_word_accuracy": probe.best_accuracy,
                     "best_epoch": probe.best_epoch, "epochs": probe.epochs})
    best = max(range(len(probes)), key=lambda i: probes[i].best_accuracy)
    reference = score(test.y, test_preds[best], test.words, test.n_examples,
                      data.baselines(test))
    result = {
        "task": data.task.name,
        "head": head,
        "subword": subword,
        "split": test.name,
        "monitor": monitor.name,
        "layers": rows,
        "mix_weights": dict(zip(map(str, layers), mix_weights(probes[-1].module))),
        "baselines": reference["baselines"],
        "unknown": test.unknown,
        "best": {"layer": probes[best].name, **{k: rows[best][k] for k in
                                                ("word_accuracy", "token_accuracy", "macro_f1")},
                 "per_class": per_class(test.y, test_preds[best], data.label_names)},
        "n_words": reference["n_words"],
        "n_tokens": reference["n_tokens"],
        "train": {"n_tokens": int(len(data.train_rows)), "seconds": round(train_seconds, 3),
                  "heads": len(probes)},
    }
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "sweep.json", result)
    atomic_write_json(out_dir / "per_class.json", result["best"]["per_class"])
    plot_layers(out_dir / "layers.png", result)
    plot_confusion(out_dir / "confusion.png", test.y, test_preds[best], data.label_names,
                   f"{data.task.name}, best head: layer {probes[best].name}")
    return result


def train_lockstep(probes: list[Probe], features, data: TaskData, batch_size: int,
                   generator: torch.Generator, device: torch.device) -> None:
    """One epoch for every probe: each shuffled batch is gathered once and shared."""
    for probe in probes:
        probe.module.train()
    order = epoch_order(features, data.train_rows, generator)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        x = features.batch(batch, device)
        y = data.labels[batch].to(device)
        for probe in probes:
            logits = head_logits(probe.module, x[:, probe.columns])
            loss = nn.functional.cross_entropy(logits, y, ignore_index=tasks.IGNORE)
            probe.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            probe.optimizer.step()
    for probe in probes:
        probe.module.eval()


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


def plot_layers(path: Path, result: dict) -> None:
    """Test word accuracy against layer, the mix and the baselines as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_layer = [r for r in result["layers"] if r["layer"] != "mix"]
    mix = next(r for r in result["layers"] if r["layer"] == "mix")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([int(r["layer"]) for r in per_layer], [r["word_accuracy"] for r in per_layer],
            "o-", label=f"{result['head']} head on one layer")
    ax.axhline(mix["word_accuracy"], color="tab:green", label="mix of all layers")
    for (name, base), style in zip(result["baselines"].items(), (":", "--")):
        ax.axhline(base["word_accuracy"], color="gray", linestyle=style,
                   label=f"{name} baseline")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(f"{result['split']} word accuracy")
    ax.set_title(f"{result['task']}: accuracy by layer")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def plot_confusion(path: Path, y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str],
                   title: str) -> None:
    """Row-normalised confusion matrix over the classes present in truth or predictions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = np.union1d(y_true, y_pred)
    index = np.searchsorted(classes, y_true), np.searchsorted(classes, y_pred)
    matrix = np.zeros((len(classes), len(classes)))
    np.add.at(matrix, index, 1)
    matrix /= matrix.sum(axis=1, keepdims=True).clip(min=1)
    names = [(list(label_names) + ["<unk>"])[c] or "''" for c in classes]
    size = max(4, 0.35 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
