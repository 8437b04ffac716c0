"""`python -m bench`: the reference method and the pipeline side by side, in one run.

Same corpus, same model, same held-out lines (the last 10% of examples, as `pipeline fit`).
Phases, in order: the reference (embed in its batching, then its 100-step training loop), then
`pipeline embed`'s forward pass alone, then `pipeline embed` in a child process in turns with
the reference's batching (`embed_speedup` is the in-turns figure), then `pipeline fit` at its
defaults in child processes (peak RSS), then fit's training speed per token (alone, then in
turns with reference steps: `fit_speedup` is the in-turns figure), then time-to-accuracy.

Embed tokens/s leave model loading out on both sides: the reference's is its forward loop;
ours is the whole `embed` call less loading the model (reading the corpus, tokenizing, the
forward pass, writing and checksumming the shards, labels, manifest). Time-to-accuracy wall
times include model loading on both sides. No figure includes Python imports (each side loads
the model once, untimed, first); held-out evaluations are never on the clock.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench import child, reference
from pipeline.settings import EmbedSettings, FitSettings
from pipeline.corpus import read_corpus
from pipeline.embedding import (DEFAULT_MODEL, cast_model, embed_examples, load_model,
                            resolve_dtype, resolve_model_path, tokenize)
from pipeline.training import (Features, HeadConfig, Trainee, TrainOptions, new_trainee,
                               parse_fit_layers, predict_rows, prepare)
from pipeline.training.loop import adamw_epoch
from pipeline.store import Cache, atomic_write_json

MOBY_DICK = Path(__file__).resolve().parents[2] / "shared" / "data" / "moby-dick" / "pg2701.txt"
TASK = "first_letter"
QUICK_LINES = 1500
QUICK_STEPS = 20


def slice_corpus(corpus: str, lines: int | None, workdir: Path) -> tuple[str, list[str]]:
    """The corpus both sides read, and its examples. With `lines`, the first `lines` examples
    are written to workdir so that `pipeline embed` sees exactly the same text."""
    texts = [e.text for e in read_corpus(corpus).examples]
    if lines is None or lines >= len(texts):
        return corpus, texts
    texts = texts[:lines]
    path = workdir / "corpus.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return str(path), texts


def run_reference(model_path: str, texts: list[str], steps: int, seed: int):
    """Embed throughput in the reference batching, then the reference training loop.

    wall_seconds is what the reference costs from nothing to a trained head: model load,
    encoding and labelling every line, `steps` steps. Returns (results, model, encoded data,
    number of training lines), the last three for paired_fit_speed.
    """
    child.import_model_code(model_path)
    started = time.perf_counter()
    model, tokenizer = reference.load(model_path)
    load_seconds = time.perf_counter() - started
    max_length = min(model.config.max_position_embeddings, tokenizer.model_max_length)
    data = reference.prepare(tokenizer, texts, max_length)
    embed_result = reference.embed_in_order(model, data)
    n_train = len(texts) - max(1, round(len(texts) * FitSettings().val_fraction))
    learner, train_result = reference.train(model, data, n_train, steps=steps, seed=seed)
    accuracy = reference.held_out_accuracy(learner, data, n_train)
    return ({"embed": embed_result, "train": train_result, "held_out": accuracy,
             "load_seconds": load_seconds, "prepare_seconds": data.seconds,
             "wall_seconds": load_seconds + data.seconds + train_result["seconds"]},
            model, data, n_train)


def sorted_forward(model: str, texts: list[str]) -> dict:
    """`pipeline embed`'s forward pass alone (no shards written): length-sorted batches under
    its default token budget, its default compute dtype, every hidden state copied off as
    float16. Compared with the reference's 128-line fp32 batches over the same lines."""
    lm = load_model(model, device="cpu")
    dtype = resolve_dtype(EmbedSettings().dtype, lm.device)
    cast_model(lm, dtype)
    started = time.perf_counter()
    encoded = tokenize(lm.tokenizer, texts, lm.max_length)
    n_tokens = sum(len(e.input_ids) for e in encoded)
    embed_examples(lm, encoded, list(range(lm.n_hidden_states)), EmbedSettings().max_tokens, dtype)
    seconds = time.perf_counter() - started
    return {"dtype": dtype, "seconds": seconds, "real_tokens": n_tokens,
            "tokens_per_second": n_tokens / seconds}


class CacheTask:
    """What `pipeline fit` trains and scores on, loaded as fit loads it: labels, training rows,
    the held-out rows with their truth, and the chosen layers as float16 features."""

    def __init__(self, cache_dir: Path, layers: str, params: FitSettings):
        cache = Cache(cache_dir)
        self.data = prepare(cache, TASK, params.val_fraction)
        self.layers = parse_fit_layers(layers, cache.layers)
        self.features = Features.load(cache, self.layers)
        self.params = params

    def new_head(self) -> Trainee:
        """A fresh linear head and fit's optimizer at fit's defaults."""
        torch.manual_seed(self.params.seed)
        config = HeadConfig(kind="linear", in_features=self.features.in_features,
                            n_labels=len(self.data.label_names))
        return new_trainee("head", config, TrainOptions(lr=self.params.lr,
                                                        weight_decay=self.params.weight_decay))

    def train(self, head: Trainee, rows: np.ndarray, generator: torch.Generator) -> None:
        adamw_epoch([head], self.features, rows, self.data.labels, self.params.batch_size,
                    generator, torch.device("cpu"))

    def timed_epoch(self, head: Trainee, generator: torch.Generator) -> float:
        """One epoch over the training rows; microseconds per training token."""
        started = time.perf_counter()
        self.train(head, self.data.train_rows, generator)
        return 1e6 * (time.perf_counter() - started) / len(self.data.train_rows)

    def held_out(self, head: Trainee) -> dict:
        test = self.data.test
        hit = predict_rows(head.module, self.features, test.rows) == test.y
        return {"word_accuracy": float(hit[test.words].mean()),
                "token_accuracy": float(hit.mean())}


def fit_speed(cache_dir: Path, layers: str, epochs: int, params: FitSettings) -> dict:
    """Microseconds per training token of pipeline fit's training loop (median epoch)."""
    task = CacheTask(cache_dir, layers, params)
    head = task.new_head()
    generator = torch.Generator().manual_seed(params.seed)
    per_epoch = [task.timed_epoch(head, generator) for _ in range(epochs)]
    return {"layers": task.layers, "epochs": epochs,
            "train_tokens": int(len(task.data.train_rows)),
            "epoch_us_per_token": per_epoch, "us_per_token": statistics.median(per_epoch)}


def medians(rounds: list[dict], keys: tuple[str, ...]) -> dict:
    """The median over `rounds` of each of `keys`."""
    return {key: statistics.median(r[key] for r in rounds) for key in keys}


def paired_embed_speed(ref_model, ref_data, corpus_path: str, model: str, cache_dir: Path,
                       rounds: int) -> dict:
    """Real tokens/s of the reference's batching and of `pipeline embed` (child process, shards
    written), taken in turns like paired_fit_speed: each round runs both over the whole corpus,
    the reference first in even rounds and second in odd ones, so a steady drift in the
    machine's speed favours neither. The speedup is the median of the rounds' ratios. The
    first round's cache is kept at `cache_dir`; the others are removed."""
    measured = []
    for r in range(rounds):
        out = cache_dir if r == 0 else cache_dir.with_name(f"{cache_dir.name}-round{r}")
        sides = {}
        for side in (("reference", "pipeline") if r % 2 == 0 else ("pipeline", "reference")):
            if side == "reference":
                sides[side] = reference.embed_in_order(ref_model, ref_data)
            else:
                sides[side] = child.run("embed", corpus_path, str(out), "--model", model)
        if r:
            shutil.rmtree(out)
        ours = sides["pipeline"]
        pass_seconds = ours["seconds"] - ours["stats"]["load_seconds"]
        tokens_per_second = ours["stats"]["real_tokens"] / pass_seconds
        reference_tps = sides["reference"]["tokens_per_second"]
        measured.append({"reference_tokens_per_second": reference_tps,
                         "tokens_per_second": tokens_per_second,
                         "ratio": tokens_per_second / reference_tps,
                         "pass_seconds": pass_seconds, "seconds": ours["seconds"],
                         "stats": ours["stats"], "peak_rss_mb": ours["peak_rss_mb"]})
    return {"rounds": measured, "peak_rss_mb": max(m["peak_rss_mb"] for m in measured),
            **medians(measured, ("reference_tokens_per_second", "tokens_per_second", "ratio"))}


def paired_fit_speed(model, data, n_train: int, cache_dir: Path, layer: str, params: FitSettings,
                     rounds: int, reference_steps: int) -> dict:
    """Time per training token of the reference loop and of fit's epoch, taken in turns.

    Each round times `reference_steps` steps of the reference loop, then one epoch of a linear
    head on `layer`; the speedup is the median of the rounds' ratios. This machine's speed
    drifts by up to 2x within minutes, so phases measured minutes apart can disagree by that
    much; rounds a few seconds long see the same machine on both sides.
    """
    task = CacheTask(cache_dir, layer, params)
    head = task.new_head()
    generator = torch.Generator().manual_seed(params.seed)
    measured = []
    for r in range(rounds):
        reference_us = reference.train(model, data, n_train, steps=reference_steps,
                                       seed=r)[1]["us_per_token"]
        ours = task.timed_epoch(head, generator)
        measured.append({"reference_us_per_token": reference_us, "us_per_token": ours,
                         "ratio": reference_us / ours})
    return {"layers": task.layers, "reference_steps": reference_steps, "rounds": measured,
            **medians(measured, ("reference_us_per_token", "us_per_token", "ratio"))}


def time_to_accuracy(cache_dir: Path, embed_seconds: float, target: float, budget: float,
                     params: FitSettings, max_epochs: int) -> dict:
    """Train as `pipeline fit` does, checking held-out word accuracy off the clock.

    The clock starts at embed_seconds and adds loading the cache and every training segment.
    Checkpoints fall after 1, 2, 4, 8, ... steps in the first epoch, then after every epoch;
    training stops once the clock passes `budget` with `target` reached (or after max_epochs).
    """
    started = time.perf_counter()
    task = CacheTask(cache_dir, params.layers, params)
    head = task.new_head()
    generator = torch.Generator().manual_seed(params.seed)
    rows = task.data.train_rows
    clock = embed_seconds + time.perf_counter() - started
    checkpoints = []
    for epoch in range(max_epochs):
        order = rows[torch.randperm(len(rows), generator=generator).numpy()]
        steps = -(-len(order) // params.batch_size)
        bounds = [1 << k for k in range(steps.bit_length()) if 1 << k < steps] if epoch == 0 else []
        previous = 0
        for bound in bounds + [steps]:
            segment = order[previous * params.batch_size:bound * params.batch_size]
            previous = bound
            tick = time.perf_counter()
            task.train(head, segment, generator)
            clock += time.perf_counter() - tick
            checkpoints.append({"seconds": clock, "epoch": epoch + bound / steps,
                                **task.held_out(head)})
        reached = any(c["word_accuracy"] >= target for c in checkpoints)
        if clock >= budget and reached:
            break
    first = next((c for c in checkpoints if c["word_accuracy"] >= target), None)
    in_budget = [c for c in checkpoints if c["seconds"] <= budget]
    return {"layers": task.layers, "checkpoints": checkpoints,
            "seconds_to_target": first["seconds"] if first else None,
            "accuracy_at_budget": in_budget[-1]["word_accuracy"] if in_budget else None}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run(corpus: str, model: str, quick: bool, workdir: Path, seed: int = 0) -> dict:
    lines = QUICK_LINES if quick else None
    steps = QUICK_STEPS if quick else reference.STEPS
    corpus_path, texts = slice_corpus(corpus, lines, workdir)
    params = FitSettings()
    results: dict = {"corpus": corpus, "model": model, "quick": quick, "examples": len(texts),
                     "machine": machine(), "fit_params": {"lr": params.lr,
                                                          "batch_size": params.batch_size}}

    print(f"[bench] reference: embed in its batching, then {steps} training steps", flush=True)
    ref, ref_model, ref_data, n_train = run_reference(resolve_model_path(model), texts, steps,
                                                      seed)
    print("[bench] pipeline's sorted batching, forward pass only", flush=True)
    batching = sorted_forward(model, texts)

    print("[bench] reference batching and pipeline embed (child process), in turns",
          flush=True)
    cache_dir = workdir / "cache"
    embed_turns = paired_embed_speed(ref_model, ref_data, corpus_path, model, cache_dir,
                                     rounds=2 if quick else 3)
    ours_embed = embed_turns["rounds"][0]
    stats = ours_embed["stats"]
    cache = Cache(cache_dir)
    n_layers = len(cache.layers)
    disk = sum(s["bytes"] for s in cache.shards)

    print("[bench] pipeline fit, one layer and all layers (child processes)", flush=True)
    one_layer = str(cache.layers[0])
    fit_one = child.run("fit", str(cache_dir), str(workdir / "head-one"), "--layers", one_layer)
    fit_all = child.run("fit", str(cache_dir), str(workdir / "head-all"), "--layers", "all")

    print("[bench] fit speed per training token", flush=True)
    epochs = 2 if quick else 3
    speed_one = fit_speed(cache_dir, one_layer, epochs, params)
    speed_all = fit_speed(cache_dir, "all", epochs, params)
    print("[bench] fit speed, reference and pipeline in turns", flush=True)
    paired = paired_fit_speed(ref_model, ref_data, n_train, cache_dir, one_layer, params,
                              rounds=3 if quick else 7, reference_steps=2 if quick else 5)

    print("[bench] time to the reference's accuracy", flush=True)
    target = ref["held_out"]["word_accuracy"]
    tta = time_to_accuracy(cache_dir, ours_embed["seconds"], target, ref["wall_seconds"], params,
                           max_epochs=5 if quick else 40)

    # like the reference's figure, without loading the model (reported apart)
    pass_seconds = ours_embed["pass_seconds"]
    ours_tps = ours_embed["tokens_per_second"]
    layers_mb = cache.layer_bytes(cache.layers) / 1e6
    results.update({
        "batching_speedup": batching["tokens_per_second"] / ref["embed"]["tokens_per_second"],
        "embed_speedup": embed_turns["ratio"],
        "embed_speedup_sequential": ours_tps / ref["embed"]["tokens_per_second"],
        "fit_speedup": paired["ratio"],
        "fit_speedup_sequential": ref["train"]["us_per_token"] / speed_one["us_per_token"],
        "fit_speedup_all_layers": ref["train"]["us_per_token"] / speed_all["us_per_token"],
        "time_to_reference_accuracy_ratio": ratio(tta["seconds_to_target"], ref["wall_seconds"]),
        "accuracy_at_reference_time": tta["accuracy_at_budget"],
        "fit_peak_rss_mb": fit_all["peak_rss_mb"],
        "fit_layers_mb": layers_mb,
        "fit_one_layer_peak_rss_mb": fit_one["peak_rss_mb"],
        "fit_one_layer_layers_mb": cache.layer_bytes([cache.layers[0]]) / 1e6,
        "embed_peak_rss_mb": embed_turns["peak_rss_mb"],
        "disk_bytes_per_token_per_layer": disk / (cache.n_tokens * n_layers),
        "reference": ref,
        "pipeline": {
            "embed": {"seconds": ours_embed["seconds"], "load_seconds": stats["load_seconds"],
                      "survey_seconds": stats["survey_seconds"],
                      "pass_seconds": pass_seconds, "real_tokens": stats["real_tokens"],
                      "tokens_per_second": ours_tps,
                      "padding": 1 - stats["real_tokens"] / max(1, stats["padded_tokens"]),
                      "layers": cache.layers, "loop_tokens_per_second":
                          stats["tokens_per_second"]},
            "embed_in_turns": embed_turns,
            "sorted_forward": batching,
            "fit_speed_one_layer": speed_one,
            "fit_speed_paired": paired,
            "fit_speed_all_layers": speed_all,
            "fit_cli_one_layer": fit_one,
            "fit_cli_all_layers": fit_all,
            "time_to_accuracy": tta,
        },
    })
    return results


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(r: dict) -> str:
    ref, ours = r["reference"], r["pipeline"]
    paired = ours["fit_speed_paired"]
    target = ref["held_out"]["word_accuracy"]
    rows = [
        ("", "reference", "pipeline", "ratio"),
        (f"forward tokens/s: 128-line fp32 vs sorted {ours['sorted_forward']['dtype']}",
         fmt(ref["embed"]["tokens_per_second"], ",.0f"),
         fmt(ours["sorted_forward"]["tokens_per_second"], ",.0f"),
         fmt(r["batching_speedup"], ".2f") + "x"),
        ("embed real tokens/s (ours: tokenize+forward+write), in turns",
         fmt(ours["embed_in_turns"]["reference_tokens_per_second"], ",.0f"),
         fmt(ours["embed_in_turns"]["tokens_per_second"], ",.0f"),
         fmt(r["embed_speedup"], ".2f") + "x"),
        ("  each round's ratio", "", "",
         " ".join(f"{m['ratio']:.2f}" for m in ours["embed_in_turns"]["rounds"])),
        ("embed real tokens/s, phases apart", fmt(ref["embed"]["tokens_per_second"], ",.0f"),
         fmt(ours["embed"]["tokens_per_second"], ",.0f"),
         fmt(r["embed_speedup_sequential"], ".2f") + "x"),
        ("embed padding", fmt(ref["embed"]["padding"], ".1%"), fmt(ours["embed"]["padding"], ".1%"),
         ""),
        ("fit us/training token, 1 layer, in turns", fmt(paired["reference_us_per_token"], ".1f"),
         fmt(paired["us_per_token"], ".3f"), fmt(r["fit_speedup"], ",.0f") + "x"),
        ("fit us/training token, 1 layer, phases apart", fmt(ref["train"]["us_per_token"], ".1f"),
         fmt(ours["fit_speed_one_layer"]["us_per_token"], ".3f"),
         fmt(r["fit_speedup_sequential"], ",.0f") + "x"),
        (f"fit us/training token, {len(ours['embed']['layers'])} layers", "",
         fmt(ours["fit_speed_all_layers"]["us_per_token"], ".3f"),
         fmt(r["fit_speedup_all_layers"], ",.0f") + "x"),
        (f"wall s to word acc {target:.3f} (embed incl.)", fmt(ref["wall_seconds"], ".1f"),
         fmt(ours["time_to_accuracy"]["seconds_to_target"], ".1f"),
         fmt(r["time_to_reference_accuracy_ratio"], ".2f")),
        ("word accuracy at reference wall time", fmt(target, ".3f"),
         fmt(r["accuracy_at_reference_time"], ".3f"), ""),
        ("default fit word / token accuracy", "",
         f"{ours['fit_cli_all_layers']['metrics']['word_accuracy']:.3f} / "
         f"{ours['fit_cli_all_layers']['metrics']['token_accuracy']:.3f}", ""),
        ("peak RSS MB: embed", "", fmt(r["embed_peak_rss_mb"], ",.0f"), ""),
        ("peak RSS MB: fit all layers / layers MB", "",
         f"{r['fit_peak_rss_mb']:,.0f} / {r['fit_layers_mb']:,.0f}",
         f"limit {1.5 * r['fit_layers_mb'] + 500:,.0f}"),
        ("peak RSS MB: fit 1 layer / layer MB", "",
         f"{r['fit_one_layer_peak_rss_mb']:,.0f} / {r['fit_one_layer_layers_mb']:,.0f}",
         f"limit {1.5 * r['fit_one_layer_layers_mb'] + 500:,.0f}"),
        ("disk bytes per token per layer", "",
         fmt(r["disk_bytes_per_token_per_layer"], ",.0f"), ""),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Reference method vs. pipeline: embed and fit speed, time-to-accuracy, "
                    "memory. `python -m bench gpu --help` for the GPU benchmark.")
    parser.add_argument("--corpus", default=str(MOBY_DICK),
                        help="text corpus, one example per line (default: Moby-Dick)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_LINES} lines, {QUICK_STEPS} reference steps")
    parser.add_argument("--json", dest="json_path", help="also write the results to this file")
    parser.add_argument("--workdir", help="keep the cache and heads here (default: a temporary "
                                          "directory, removed afterwards)")
    args = parser.parse_args(argv)
    if not Path(args.corpus).exists():
        print(f"bench: corpus {args.corpus} not found; pass --corpus", file=sys.stderr)
        return 2

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = run(args.corpus, args.model, args.quick, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))
    if args.json_path:
        atomic_write_json(args.json_path, results)
    return 0
