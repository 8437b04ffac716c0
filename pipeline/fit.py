"""Train a head on a cache: no transformer, only stored float16 features and labels."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import tasks
from pipeline.devices import resolve_device
from pipeline.evaluate import accuracies, predict_rows, score, scored_rows
from pipeline.features import Features
from pipeline.heads import HeadConfig, SavedHead, build_head
from pipeline.store import Cache, CacheError, atomic_write, atomic_write_json


def parse_fit_layers(spec: str | int | list[int] | None, cached: list[int]) -> list[int]:
    """None/'all' -> every cached layer; '3' -> [3]; '0,1,2' -> concatenation of those layers."""
    if spec is None or spec == "all":
        return list(cached)
    items = spec if isinstance(spec, list) else [s for s in str(spec).split(",") if s.strip()]
    try:
        layers = [int(item) for item in items]
    except ValueError:
        raise CacheError(f"bad --layers {spec!r}: give cached layer indices like 0 or 0,1,2, "
                         f"or 'all'") from None
    missing = [layer for layer in layers if layer not in cached]
    if missing:
        raise CacheError(f"layer(s) {missing} out of range: this cache holds layers {cached}")
    return layers


def split_rows(example_ids: np.ndarray, n_examples: int,
               val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of the training examples and of the held-out LAST val_fraction of examples."""
    if not 0 < val_fraction < 1:
        raise CacheError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    n_val = max(1, round(n_examples * val_fraction))
    if n_val >= n_examples:
        raise CacheError(f"only {n_examples} examples: nothing left to train on after holding "
                         f"out {n_val}")
    held_out = example_ids >= n_examples - n_val
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


def mean_loss(module: nn.Module, features: Features, rows: np.ndarray, labels: torch.Tensor,
              device: torch.device, batch_size: int = 16384) -> float:
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            logits = module(features.batch(batch, device))
            total += nn.functional.cross_entropy(logits, labels[batch].to(device),
                                                 ignore_index=tasks.IGNORE, reduction="sum").item()
    return total / max(1, int((labels[rows] != tasks.IGNORE).sum()))


def train_epoch(module: nn.Module, optimizer: torch.optim.Optimizer, features: Features,
                rows: np.ndarray, labels: torch.Tensor, batch_size: int,
                generator: torch.Generator, device: torch.device) -> float:
    """One pass over `rows` in shuffled batches of `batch_size` tokens; returns the mean loss."""
    module.train()
    order = rows[torch.randperm(len(rows), generator=generator).numpy()]
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        logits = module(features.batch(batch, device))
        loss = nn.functional.cross_entropy(logits, labels[batch].to(device),
                                           ignore_index=tasks.IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        count += len(batch)
    module.eval()
    return total / max(1, count)


def write_history(head_dir: Path, history: list[dict]) -> None:
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    atomic_write(head_dir / "history.csv", write)


def plot_history(head_dir: Path, history: list[dict], title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(6, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="held-out loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax = loss_ax.twinx()
    acc_ax.plot(epochs, [h["val_word_accuracy"] for h in history], "g--",
                label="held-out word accuracy")
    acc_ax.set_ylabel("accuracy")
    handles = loss_ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
    loss_ax.legend(handles, [h.get_label() for h in handles], loc="center right")
    loss_ax.set_title(title)
    fig.tight_layout()
    atomic_write(head_dir / "loss.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def fit(cache_dir: str, task: str, out: str, layers: str | list[int] | None = None,
        epochs: int = 10, lr: float = 3e-3, batch_size: int = 4096, seed: int = 0,
        val_fraction: float = 0.1, device: str = "auto", head: str = "linear") -> dict:
    """Train a head on `cache_dir`'s features for `task`; write head, history, plot, metrics.

    Returns the metrics on the held-out examples (the last val_fraction of the corpus).
    """
    torch.manual_seed(seed)
    task_def = tasks.get_task(task)
    cache = Cache(cache_dir)
    layer_list = parse_fit_layers(layers, cache.layers)
    if not cache.has_labels(task) and task in tasks.COMPUTED:
        tasks.label_cache(cache, task)
    labels_np = cache.read_labels(task)
    word_ids = cache.read("word_ids")
    example_ids = cache.read("example_ids")
    train_rows, val_rows = split_rows(example_ids, cache.n_examples, val_fraction)
    features = Features.load(cache, layer_list)
    labels = torch.from_numpy(labels_np.astype(np.int64))
    torch_device = resolve_device(device)

    config = HeadConfig(head, features.in_features, len(cache.label_names(task)))
    module = build_head(config).to(torch_device)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)

    scored_train = scored_rows(labels_np, word_ids, train_rows)
    majority = int(np.bincount(labels_np[scored_train]).argmax())
    scored_val = scored_rows(labels_np, word_ids, val_rows)
    y_val = labels_np[scored_val].astype(np.int64)

    history = []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        train_loss = train_epoch(module, optimizer, features, train_rows, labels, batch_size,
                                 generator, torch_device)
        y_pred = predict_rows(module, features, scored_val, device=torch_device)
        val_accuracy = accuracies(task_def, y_val, y_pred)
        history.append({
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "val_loss": round(mean_loss(module, features, val_rows, labels, torch_device), 6),
            "val_token_accuracy": round(val_accuracy["token_accuracy"], 6),
            "val_word_accuracy": round(val_accuracy["word_accuracy"], 6),
        })
    train_seconds = time.perf_counter() - started

    metrics = score(task_def, y_val, y_pred, majority, len(np.unique(example_ids[val_rows])))
    metrics["train"] = {
        "n_tokens": int(len(train_rows)),
        "epochs": epochs,
        "seconds": round(train_seconds, 3),
        "us_per_token": round(1e6 * train_seconds / max(1, epochs * len(train_rows)), 4),
        "feature_bytes": features.nbytes,
    }

    head_dir = Path(out)
    head_dir.mkdir(parents=True, exist_ok=True)
    saved = SavedHead(module.cpu(), config, task, cache.label_names(task), layer_list,
                      cache.fingerprint, majority)
    saved.save(head_dir, extra={"fit": {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                                        "seed": seed, "val_fraction": val_fraction}})
    write_history(head_dir, history)
    plot_history(head_dir, history, f"{task}, {head} head on layers {layer_list}")
    atomic_write_json(head_dir / "metrics.json", metrics)
    return metrics
