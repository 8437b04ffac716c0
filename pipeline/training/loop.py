"""The one training loop: epochs over the training rows, every head watched on a monitor
split after each epoch, early stopping and best-weights keeping per head.

fit trains one head through it, sweep one per layer plus a mix. The heads train in lockstep:
each batch is gathered once and every head reads its own columns of it, so the features are
read once per epoch however many heads there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from pipeline import tasks
from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import accuracies
from pipeline.training.data import EvalSplit
from pipeline.training.features import FeatureSource
from pipeline.training.examples import Sequences
from pipeline.training.heads import HeadConfig, build_head, head_logits, predict_heads
from pipeline.training.sequence_loop import decode_sequences, sequence_epoch

# full-batch L-BFGS: iterations per epoch, and rows gathered at a time to sum the loss
LBFGS_ITERATIONS = 20
LBFGS_CHUNK = 16384


@dataclass(frozen=True)
class TrainOptions:
    """How the heads of one run are trained (values checked by pipeline.settings)."""

    epochs: int = 10
    lr: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    patience: int = 3
    batch_size: int = 4096
    seed: int = 0
    optimizer: str = "adamw"
    device: torch.device = torch.device("cpu")


@dataclass
class Trainee:
    """One head in training and what the loop keeps of it."""

    name: str
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    columns: slice  # the columns of the shared batch this head reads
    history: list[dict] = field(default_factory=list)  # one record per epoch
    best_accuracy: float = -1.0  # monitor word accuracy of the kept weights
    best_epoch: int = 0
    best_state: dict | None = None
    active: bool = True


def make_optimizer(module: nn.Module, lr: float, weight_decay: float,
                   optimizer: str = "adamw") -> torch.optim.Optimizer:
    """AdamW, fused (one kernel per step instead of a few per parameter). Or full-batch
    L-BFGS, which finds its own step sizes (weight_decay is applied by lbfgs_epoch's
    objective, not here)."""
    if optimizer == "lbfgs":
        return torch.optim.LBFGS(module.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS,
                                 history_size=LBFGS_ITERATIONS, line_search_fn="strong_wolfe")
    return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, epochs: int):
    """Learning rate per epoch: constant, cosine to 0, or linear to 0 over `epochs`."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1 - e / epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


def new_trainee(name: str, config: HeadConfig, options: TrainOptions,
                columns: slice = slice(None)) -> Trainee:
    """A freshly initialised head (from torch's global seed) with its optimizer."""
    module = build_head(config).to(options.device)
    optimizer = make_optimizer(module, options.lr, options.weight_decay, options.optimizer)
    return Trainee(name, module, optimizer,
                   make_schedule(optimizer, options.schedule, options.epochs), columns)


def train(trainees: list[Trainee], features: FeatureSource, labels: torch.Tensor,
          train_rows: np.ndarray, monitor: EvalSplit, early_stop: bool, options: TrainOptions,
          on_epoch: Callable[[Trainee, dict], None] | None = None,
          sequences: tuple[Sequences, Sequences] | None = None) -> None:
    """Train `trainees` for up to options.epochs on (n_tokens,) `labels` of `train_rows`.

    After each epoch every head is scored on `monitor` and `on_epoch(trainee, record)` called
    with its history record. With `early_stop` a head stops after options.patience epochs
    without a better monitor word accuracy and gets its best epoch's weights back; otherwise
    each keeps its last epoch's. An AdamW epoch is a pass in shuffled batches, an L-BFGS
    epoch one full-batch step. A NaN or infinite loss is a one-line PipelineError.
    With `sequences` (the training examples, and the monitor's examples holding its rows) an
    epoch is a pass over whole examples in padded batches of options.batch_size words
    (training.sequence_loop): sequence heads and row heads train side by side.
    """
    generator = torch.Generator().manual_seed(options.seed)
    for epoch in range(1, options.epochs + 1):
        active = [t for t in trainees if t.active]
        if not active:
            break
        heads = [(t.module, t.columns) for t in active]
        if sequences is not None:
            losses = sequence_epoch(active, features, labels, sequences[0], options.batch_size,
                                    generator, options.device)
            preds, _, val_losses = decode_sequences(heads, features, sequences[1],
                                                    options.device, labels)
            preds = [p[sequences[1].positions(monitor.rows)] for p in preds]
        elif options.optimizer == "lbfgs":
            losses = [lbfgs_epoch(t, features, train_rows, labels, options) for t in active]
        else:
            losses = adamw_epoch(active, features, train_rows, labels, options.batch_size,
                                 generator, options.device)
        if sequences is None:
            preds, val_losses = predict_heads(heads, features, monitor.rows, options.device,
                                              labels)
        for trainee, loss, y_pred, val_loss in zip(active, losses, preds, val_losses):
            check_finite(trainee, epoch, loss, val_loss)
            trainee.scheduler.step()
            accuracy = accuracies(monitor.y, y_pred, monitor.words)
            record = {"epoch": epoch, "train_loss": round(loss, 6),
                      "val_loss": round(val_loss, 6),
                      "val_token_accuracy": round(accuracy["token_accuracy"], 6),
                      "val_word_accuracy": round(accuracy["word_accuracy"], 6)}
            trainee.history.append(record)
            if on_epoch is not None:
                on_epoch(trainee, record)
            keep_best(trainee, epoch, accuracy["word_accuracy"], early_stop, options.patience)
    for trainee in trainees:
        if trainee.best_state is not None:
            trainee.module.load_state_dict(trainee.best_state)
        trainee.module.eval()


def keep_best(trainee: Trainee, epoch: int, accuracy: float, early_stop: bool,
              patience: int) -> None:
    """Early stopping: remember the best epoch's weights; stop after `patience` worse ones."""
    if not early_stop:
        trainee.best_accuracy, trainee.best_epoch = accuracy, epoch
    elif accuracy > trainee.best_accuracy:
        trainee.best_accuracy, trainee.best_epoch = accuracy, epoch
        trainee.best_state = {k: v.detach().clone() for k, v in trainee.module.state_dict().items()}
    elif epoch - trainee.best_epoch >= patience:
        trainee.active = False


def check_finite(trainee: Trainee, epoch: int, loss: float, val_loss: float) -> None:
    if not (math.isfinite(loss) and math.isfinite(val_loss)):
        which = "" if trainee.name == "head" else f" of head {trainee.name}"
        raise PipelineError(f"training diverged: the loss{which} became "
                            f"{loss if not math.isfinite(loss) else val_loss} in epoch {epoch}; "
                            f"lower --lr (no head written)")


def adamw_epoch(trainees: list[Trainee], features: FeatureSource, rows: np.ndarray,
                labels: torch.Tensor, batch_size: int, generator: torch.Generator,
                device: torch.device) -> list[float]:
    """One pass over `rows` in shuffled batches of `batch_size` tokens, each batch gathered
    once for all heads; returns each head's mean training loss."""
    for trainee in trainees:
        trainee.module.train()
    order = features.epoch_order(rows, generator)
    # summed on the device: reading each loss back would wait for the device every batch
    totals = [torch.zeros((), device=device) for _ in trainees]
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        x = features.batch(batch, device)
        y = labels[batch].to(device)
        for trainee, total in zip(trainees, totals):
            logits = head_logits(trainee.module, x[:, trainee.columns])
            loss = nn.functional.cross_entropy(logits, y, ignore_index=tasks.IGNORE)
            trainee.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainee.optimizer.step()
            total += loss.detach() * len(batch)
    for trainee in trainees:
        trainee.module.eval()
    return [total.item() / max(1, len(order)) for total in totals]


def lbfgs_epoch(trainee: Trainee, features: FeatureSource, rows: np.ndarray,
                labels: torch.Tensor, options: TrainOptions) -> float:
    """One full-batch L-BFGS step (up to LBFGS_ITERATIONS iterations, strong-Wolfe line
    search) on the mean loss over all of `rows` plus weight_decay / 2 * |weights|^2, gathered
    LBFGS_CHUNK rows at a time in order; returns that objective before the step."""
    module, device = trainee.module, options.device
    n_labelled = max(1, int((labels[rows] != tasks.IGNORE).sum()))

    def objective() -> torch.Tensor:
        trainee.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, len(rows), LBFGS_CHUNK):
            chunk = rows[start:start + LBFGS_CHUNK]
            x = features.batch(chunk, device)[:, trainee.columns]
            loss = nn.functional.cross_entropy(
                head_logits(module, x), labels[chunk].to(device),
                ignore_index=tasks.IGNORE, reduction="sum") / n_labelled
            loss.backward()
            total += loss.item()
        if options.weight_decay:
            penalty = options.weight_decay / 2 * sum(p.square().sum() for p in module.parameters()
                                                     if p.dim() > 1)
            penalty.backward()
            total += penalty.item()
        return torch.tensor(total)

    module.train()
    before = trainee.optimizer.step(objective)
    module.eval()
    return float(before)
