"""Train a head on a cache: no transformer, only stored float16 features and labels."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import tasks
from pipeline.devices import resolve_device
from pipeline.evaluate import (accuracies, lookup_predict, lookup_table, predict_rows, score,
                               scored_rows, unknown_labels)
from pipeline.features import Features
from pipeline.stream import epoch_order
from pipeline.heads import (HEAD_KINDS, HeadConfig, SavedHead, build_head, head_logits,
                            mix_weights)
from pipeline.store import Cache, CacheError, atomic_write, atomic_write_json
from pipeline.subword import load_word_features


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
            logits = head_logits(module, features.batch(batch, device))
            total += nn.functional.cross_entropy(logits, labels[batch].to(device),
                                                 ignore_index=tasks.IGNORE, reduction="sum").item()
    return total / max(1, int((labels[rows] != tasks.IGNORE).sum()))


def train_epoch(module: nn.Module, optimizer: torch.optim.Optimizer, features: Features,
                rows: np.ndarray, labels: torch.Tensor, batch_size: int,
                generator: torch.Generator, device: torch.device) -> float:
    """One pass over `rows` in shuffled batches of `batch_size` tokens; returns the mean loss."""
    module.train()
    order = epoch_order(features, rows, generator)
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        logits = head_logits(module, features.batch(batch, device))
        loss = nn.functional.cross_entropy(logits, labels[batch].to(device),
                                           ignore_index=tasks.IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        count += len(batch)
    module.eval()
    return total / max(1, count)


def lbfgs_epoch(module: nn.Module, optimizer: torch.optim.LBFGS, features, rows: np.ndarray,
                labels: torch.Tensor, weight_decay: float, device: torch.device) -> float:
    """One full-batch L-BFGS step (up to LBFGS_ITERATIONS iterations, strong-Wolfe line
    search) on the mean loss over all of `rows` plus weight_decay / 2 * |weights|^2, gathered
    LBFGS_CHUNK rows at a time in order; returns that objective before the step."""
    n_labelled = max(1, int((labels[rows] != tasks.IGNORE).sum()))

    def objective() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, len(rows), LBFGS_CHUNK):
            chunk = rows[start:start + LBFGS_CHUNK]
            loss = nn.functional.cross_entropy(
                head_logits(module, features.batch(chunk, device)), labels[chunk].to(device),
                ignore_index=tasks.IGNORE, reduction="sum") / n_labelled
            loss.backward()
            total += loss.item()
        if weight_decay:
            penalty = weight_decay / 2 * sum(p.square().sum() for p in module.parameters()
                                             if p.dim() > 1)
            penalty.backward()
            total += penalty.item()
        return torch.tensor(total)

    module.train()
    before = optimizer.step(objective)
    module.eval()
    return float(before)


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


SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "lbfgs")
# full-batch L-BFGS: iterations per epoch, and rows gathered at a time to sum the loss
LBFGS_ITERATIONS = 20
LBFGS_CHUNK = 16384


@dataclass
class EvalSplit:
    """Scored rows of one evaluation split with their truth: labels never seen in training
    are mapped to the unknown class (see evaluate.unknown_labels)."""

    name: str
    rows: np.ndarray  # (n,) cache rows that metrics count
    y: np.ndarray  # (n,) int64 truth
    words: np.ndarray  # (n,) bool: the rows word_accuracy counts
    n_examples: int
    unknown: dict


@dataclass
class TaskData:
    """Everything a head is trained and scored on, from one cache and one task."""

    task: tasks.Task
    label_names: list[str]
    labels: torch.Tensor  # (n_tokens,) int64, IGNORE where not labelled
    train_rows: np.ndarray
    dev: EvalSplit | None  # early stopping watches it; None: fixed epochs
    test: EvalSplit
    majority: int
    lookup: tuple[np.ndarray, np.ndarray]
    keys: np.ndarray  # (n_tokens,) type key of each row (token id or word form code)
    word_ids: np.ndarray
    example_ids: np.ndarray

    def rows(self) -> np.ndarray:
        """Every row a head trains on or is scored on."""
        return np.concatenate([self.train_rows, self.test.rows]
                              + ([self.dev.rows] if self.dev is not None else []))

    def baselines(self, split: EvalSplit) -> dict:
        """Majority and no-context lookup predictions on a split, for evaluate.score."""
        lookup = lookup_predict(self.lookup, self.keys[split.rows], self.majority)
        return {"majority": (np.full_like(split.y, self.majority), {"label": self.majority}),
                "lookup": (lookup, {"key": "token id" if self.task.level == "token"
                                    else "word form"})}


def example_rows(example_ids: np.ndarray, first: int, n: int) -> np.ndarray:
    return np.flatnonzero((example_ids >= first) & (example_ids < first + n))


def split_examples(cache: Cache, example_ids: np.ndarray, val_fraction: float
                   ) -> tuple[np.ndarray, tuple[str, np.ndarray] | None, tuple[str, np.ndarray]]:
    """Token rows of train, dev (None without one) and test. A cache embedded with --split
    uses its train/dev/test splits (test falls back to dev); otherwise the last
    val_fraction of examples is held out as the test set and there is no dev set."""
    splits = cache.manifest.get("splits")
    if not splits:
        train, held_out = split_rows(example_ids, cache.n_examples, val_fraction)
        return train, None, ("held_out", held_out)
    if "train" not in splits or not ({"dev", "test"} & set(splits)):
        raise CacheError(f"{cache.cache_dir}: splits {', '.join(splits)}; fitting needs a train "
                         f"split and a dev or test split (embed with --split train=PATH ...)")
    rows = {name: example_rows(example_ids, s["first_example"], s["n_examples"])
            for name, s in splits.items()}
    test = "test" if "test" in splits else "dev"
    dev = ("dev", rows["dev"]) if "dev" in splits and test == "test" else None
    return rows["train"], dev, (test, rows[test])


def prepare(cache: Cache, task_name: str, val_fraction: float = 0.1) -> TaskData:
    """Labels, splits, unknown-class mapping and baselines of a task on a cache."""
    if task_name in tasks.TASKS and not cache.has_labels(task_name):
        tasks.label_cache(cache, task_name)
    task = tasks.get_task(task_name, cache)
    labels_np = cache.read_labels(task.name).astype(np.int64)
    word_ids, example_ids = cache.read("word_ids"), cache.read("example_ids")
    first = tasks.first_subtokens(word_ids, example_ids)
    train_all, dev, (test_name, test_all) = split_examples(cache, example_ids, val_fraction)
    # special tokens train too where the task labels them (first_letter: ''), so that
    # predict gives them that label; metrics and baselines skip them
    train_rows = train_all[labels_np[train_all] != tasks.IGNORE]
    scored_train = scored_rows(labels_np, word_ids, train_all)
    if not len(scored_train):
        raise CacheError(f"{cache.cache_dir}: no labelled training tokens for task {task.name!r}")
    label_names = cache.label_names(task.name)
    counts = np.bincount(labels_np[scored_train], minlength=len(label_names))
    majority = int(counts.argmax())

    def eval_split(name: str, rows_all: np.ndarray) -> EvalSplit:
        rows = scored_rows(labels_np, word_ids, rows_all)
        y = labels_np[rows]
        words = task.word_mask(y, first[rows])
        y, unknown = unknown_labels(y, counts > 0, words, label_names)
        return EvalSplit(name, rows, y, words, len(np.unique(example_ids[rows_all])), unknown)

    if task.level == "token":
        keys = cache.read("input_ids").astype(np.int64)
    else:
        words = tasks.token_words(cache.texts(), word_ids, example_ids, cache.read("char_spans"))
        keys = tasks.word_type_keys(words)
    return TaskData(task, label_names, torch.from_numpy(labels_np), train_rows,
                    eval_split(*dev) if dev else None, eval_split(test_name, test_all),
                    majority, lookup_table(keys[scored_train], labels_np[scored_train]), keys,
                    word_ids, example_ids)


def make_optimizer(module: nn.Module, lr: float, weight_decay: float,
                   optimizer: str = "adamw") -> torch.optim.Optimizer:
    """AdamW, fused: one kernel per step instead of a few per parameter (a linear head's
    epoch on one Moby-Dick layer: 0.474 -> 0.448 us/token, median of 4, on 2 CPU cores).
    Or full-batch L-BFGS, which finds its own step sizes (lr and weight_decay are applied by
    lbfgs_epoch's objective, not here)."""
    if optimizer == "lbfgs":
        return torch.optim.LBFGS(module.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS,
                                 history_size=LBFGS_ITERATIONS, line_search_fn="strong_wolfe")
    if optimizer != "adamw":
        raise CacheError(f"unknown --optimizer {optimizer!r}; choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, epochs: int):
    """Learning rate per epoch: constant, cosine to 0, or linear to 0 over `epochs`."""
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1 - e / epochs)
    raise CacheError(f"unknown --schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def parse_head_layers(spec: str | int | list[int] | None, cached: list[int]
                      ) -> tuple[list[int], bool]:
    """--layers as (layers to read, mix them?): 'mix' reads every cached layer and mixes."""
    if str(spec) == "mix":
        return list(cached), True
    return parse_fit_layers(spec, cached), False


def train_head(config: HeadConfig, features, labels: torch.Tensor, train_rows: np.ndarray,
               monitor: EvalSplit, early_stop: bool, epochs: int, lr: float,
               weight_decay: float, schedule: str, patience: int, batch_size: int, seed: int,
               device: torch.device, optimizer: str = "adamw"
               ) -> tuple[nn.Module, list[dict], int]:
    """Train one head for up to `epochs`, watching `monitor` every epoch. With `early_stop`
    training stops after `patience` epochs without a better monitor word accuracy and the
    best epoch's weights are kept; otherwise the last epoch's. An AdamW epoch is a pass in
    shuffled batches, an L-BFGS epoch one full-batch step (lbfgs_epoch). Returns (module,
    history, epoch of the returned weights)."""
    if optimizer == "lbfgs" and (config.kind != "linear" or config.mix_layers):
        raise CacheError("--optimizer lbfgs trains linear heads on fixed layers (a convex "
                         "problem); use adamw for mlp heads and --layers mix")
    if optimizer == "lbfgs" and schedule != "constant":
        raise CacheError("--optimizer lbfgs finds its own step sizes; --schedule applies to adamw")
    torch.manual_seed(seed)
    module = build_head(config).to(device)
    torch_optimizer = make_optimizer(module, lr, weight_decay, optimizer)
    scheduler = make_schedule(torch_optimizer, schedule, epochs)
    generator = torch.Generator().manual_seed(seed)
    history, best_accuracy, best_epoch, best_state = [], -1.0, 0, None
    for epoch in range(1, epochs + 1):
        if optimizer == "lbfgs":
            train_loss = lbfgs_epoch(module, torch_optimizer, features, train_rows, labels,
                                     weight_decay, device)
        else:
            train_loss = train_epoch(module, torch_optimizer, features, train_rows, labels,
                                     batch_size, generator, device)
        scheduler.step()
        y_pred = predict_rows(module, features, monitor.rows, device=device)
        accuracy = accuracies(monitor.y, y_pred, monitor.words)
        history.append({
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "val_loss": round(mean_loss(module, features, monitor.rows, labels, device), 6),
            "val_token_accuracy": round(accuracy["token_accuracy"], 6),
            "val_word_accuracy": round(accuracy["word_accuracy"], 6),
        })
        if not early_stop:
            best_epoch = epoch
        elif accuracy["word_accuracy"] > best_accuracy:
            best_accuracy, best_epoch = accuracy["word_accuracy"], epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    return module.eval(), history, best_epoch


def fit(cache_dir: str, task: str, out: str, layers: str | list[int] | None = None,
        epochs: int = 10, lr: float = 3e-3, batch_size: int = 4096, seed: int = 0,
        val_fraction: float = 0.1, device: str = "auto", head: str = "linear",
        hidden: int = 512, dropout: float = 0.1, weight_decay: float = 0.0,
        schedule: str = "constant", patience: int = 3, subword: str = "first",
        selectivity: bool = False, max_memory: str | int | None = None,
        optimizer: str = "adamw") -> dict:
    """Train a head on `cache_dir`'s features for `task`; write head, history, plot, metrics.

    A cache with train/dev/test splits trains on train, early-stops on dev (`patience`
    epochs) and reports test; a plain-text cache holds out its last `val_fraction` of
    examples and trains `epochs` epochs. `layers`: one index, a list (concatenated), 'all',
    or 'mix' (learned softmax mix of every cached layer). With `selectivity` a second head
    learns the control task and metrics report the difference. Features stay in memory
    when they fit in `max_memory` (default: half the available memory), else they are
    streamed from the shards within that budget (pipeline.stream). `optimizer`: adamw
    (mini-batches of `batch_size` tokens) or lbfgs (full batch, linear heads). Returns the
    metrics.
    """
    cache = Cache(cache_dir)
    layer_list, mix = parse_head_layers(layers, cache.layers)
    if head not in HEAD_KINDS:
        raise CacheError(f"unknown --head {head!r}; choose one of {', '.join(HEAD_KINDS)}")
    data = prepare(cache, task, val_fraction)
    torch_device = resolve_device(device)
    features = load_word_features(cache, layer_list, data.rows(), subword, data.word_ids,
                                  data.example_ids, max_memory)
    config = HeadConfig(head, features.in_features, len(data.label_names),
                        hidden=hidden if head == "mlp" else 0,
                        dropout=dropout if head == "mlp" else 0.0,
                        mix_layers=len(layer_list) if mix else 0)
    options = dict(epochs=epochs, lr=lr, weight_decay=weight_decay, schedule=schedule,
                   patience=patience, batch_size=batch_size, seed=seed, device=torch_device,
                   optimizer=optimizer)
    monitor = data.dev or data.test
    started = time.perf_counter()
    module, history, best_epoch = train_head(config, features, data.labels, data.train_rows,
                                             monitor, data.dev is not None, **options)
    train_seconds = time.perf_counter() - started

    y_pred = predict_rows(module, features, data.test.rows, device=torch_device)
    metrics = score(data.test.y, y_pred, data.test.words, data.test.n_examples,
                    data.baselines(data.test))
    metrics["split"] = data.test.name
    metrics["unknown"] = data.test.unknown
    metrics["head"] = {"kind": head, "layers": "mix" if mix else layer_list, "subword": subword}
    if mix:
        metrics["head"]["mix_weights"] = dict(zip(map(str, layer_list), mix_weights(module)))
    if data.dev is not None:
        metrics["dev"] = {"best_epoch": best_epoch, "word_accuracy":
                          history[best_epoch - 1]["val_word_accuracy"]}
    metrics["train"] = {
        "n_tokens": int(len(data.train_rows)),
        "epochs": len(history),
        "seconds": round(train_seconds, 3),
        "us_per_token": round(1e6 * train_seconds / max(1, len(history) * len(data.train_rows)),
                              4),
        "feature_bytes": features.nbytes,
    }
    if selectivity:
        metrics["selectivity"] = control_selectivity(data, config, features, metrics, options)

    head_dir = Path(out)
    head_dir.mkdir(parents=True, exist_ok=True)
    saved = SavedHead(module.cpu(), config, data.task.name, data.label_names, layer_list,
                      cache.fingerprint, data.majority, subword)
    saved.save(head_dir, extra={"fit": {"optimizer": optimizer, "epochs": epochs, "lr": lr,
                                        "batch_size": batch_size, "seed": seed,
                                        "val_fraction": val_fraction,
                                        "weight_decay": weight_decay, "schedule": schedule,
                                        "patience": patience, "best_epoch": best_epoch}})
    write_history(head_dir, history)
    plot_history(head_dir, history, f"{data.task.name}, {head} head on "
                                    f"{'mix of ' if mix else ''}layers {layer_list}")
    atomic_write_json(head_dir / "metrics.json", metrics)
    return metrics


def control_selectivity(data: TaskData, config: HeadConfig, features, metrics: dict,
                        options: dict) -> dict:
    """Train the same head on the control task (Hewitt & Liang, 2019: each type a fixed random
    label) and report selectivity = task word accuracy - control word accuracy on test."""
    control = tasks.control_labels(data.keys, data.labels.numpy(), data.train_rows,
                                   seed=options["seed"])
    control_t = torch.from_numpy(control)
    test = data.test
    y_control = control[test.rows]
    monitor = EvalSplit("control", test.rows, y_control, test.words, test.n_examples, {})
    if data.dev is not None:
        monitor = EvalSplit("control", data.dev.rows, control[data.dev.rows], data.dev.words,
                            data.dev.n_examples, {})
    module, _, _ = train_head(config, features, control_t, data.train_rows, monitor,
                              data.dev is not None, **options)
    y_pred = predict_rows(module, features, test.rows, device=options["device"])
    control_accuracy = accuracies(y_control, y_pred, test.words)
    return {"control_word_accuracy": round(control_accuracy["word_accuracy"], 6),
            "control_token_accuracy": round(control_accuracy["token_accuracy"], 6),
            "selectivity": round(metrics["word_accuracy"] - control_accuracy["word_accuracy"], 6)}
