"""Figures of a fit and a sweep, drawn on matplotlib.figure.Figure objects (no pyplot, no
backend, no global state). matplotlib is an optional extra: without it no figure is drawn
and every function here returns None."""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.metrics import UNKNOWN

try:
    from matplotlib.figure import Figure
except ImportError:  # the plots are extras: training and metrics do not need them
    Figure = None


def loss_curve(history: list[dict], title: str):
    """Train and held-out loss per epoch, held-out word accuracy on a second axis; one set of
    lines per member of an ensemble (records with a "member" key)."""
    if Figure is None:
        return None
    members = sorted({h.get("member", 0) for h in history})
    fig = Figure(figsize=(6, 4))
    loss_ax = fig.add_subplot()
    acc_ax = loss_ax.twinx()
    for member in members:
        records = [h for h in history if h.get("member", 0) == member]
        epochs = [h["epoch"] for h in records]
        suffix = f" (member {member})" if member else ""
        loss_ax.plot(epochs, [h["train_loss"] for h in records], label="train loss" + suffix)
        loss_ax.plot(epochs, [h["val_loss"] for h in records], label="held-out loss" + suffix)
        acc_ax.plot(epochs, [h["val_word_accuracy"] for h in records], "--" if member else "g--",
                    label="held-out word accuracy" + suffix)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    acc_ax.set_ylabel("accuracy")
    handles = loss_ax.get_legend_handles_labels()[0] + acc_ax.get_legend_handles_labels()[0]
    loss_ax.legend(handles, [h.get_label() for h in handles], loc="center right")
    loss_ax.set_title(title)
    fig.tight_layout()
    return fig


def layers_plot(result: dict):
    """A sweep's word accuracy against layer; the mix and the baselines as horizontal lines."""
    if Figure is None:
        return None
    per_layer = [r for r in result["layers"] if r["layer"] != "mix"]
    mix = next(r for r in result["layers"] if r["layer"] == "mix")
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
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
    return fig


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str],
                     title: str):
    """Row-normalised confusion matrix over the classes present in truth or predictions;
    class len(label_names) is the unknown class."""
    if Figure is None:
        return None
    classes = np.union1d(y_true, y_pred)
    index = np.searchsorted(classes, y_true), np.searchsorted(classes, y_pred)
    matrix = np.zeros((len(classes), len(classes)))
    np.add.at(matrix, index, 1)
    matrix /= matrix.sum(axis=1, keepdims=True).clip(min=1)
    names = [(list(label_names) + [UNKNOWN])[c] or "''" for c in classes]
    size = max(4, 0.35 * len(classes) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def png_writer(fig):
    """A writer(path) that saves `fig` as PNG, for atomic_write or a head's companion files."""
    return lambda path: fig.savefig(path, format="png", dpi=100)
