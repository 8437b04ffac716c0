"""Commands that train or use heads: `fit`, `sweep`, `predict`, `evaluate`."""

from __future__ import annotations

import json
import sys

import click

from pipeline.cli import main, user_errors
from pipeline.cli.options import pop_settings, settings_options
from pipeline.settings import FitSettings


def echo_warnings(metrics: dict) -> None:
    for warning in metrics.get("warnings", []):
        click.echo(f"Warning: {warning}", err=True)


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Head directory to write (head.safetensors, head.json, metrics.json, ...).")
@settings_options(FitSettings)
@user_errors
def fit(cache_dir, out, **options):
    """Train a head on the cached features of CACHE_DIR (the transformer is not run).

    A cache embedded with --split trains on train, early-stops on dev and reports test in
    OUT/metrics.json, beside the majority and no-context lookup baselines. Settings not given
    take the best measured preset for the task and head.
    """
    from pipeline import api

    settings = FitSettings.build("", **pop_settings(FitSettings, options))
    head = api.fit(cache_dir, out=out, settings=settings)
    metrics = head.metrics
    metrics["train"]["seconds"] = head.train_seconds
    click.echo(json.dumps(metrics, indent=2))
    echo_warnings(metrics)


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for sweep.json, layers.png, per_class.json, confusion.png.")
@settings_options(FitSettings, exclude=("selectivity", "ensemble"))
@user_errors
def sweep(cache_dir, out, **options):
    """Train one head per cached layer (or per layer of --layers) plus a layer mix, all from
    one read of CACHE_DIR."""
    from pipeline import api
    from pipeline.training.sweep import format_table

    settings = FitSettings.build("", **pop_settings(FitSettings, options))
    click.echo(format_table(api.sweep(cache_dir, out=out, settings=settings)))


@main.command()
@click.argument("head_dir", type=click.Path(file_okay=False))
@click.argument("text", nargs=-1)
@click.option("--model", default=None,
              help="Load the model from here instead of the name the head records.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per input text, with each word's top-k labels.")
@click.option("--top-k", type=click.IntRange(1, 1000), default=3, show_default=True,
              help="Alternatives per word in --json output.")
@click.option("--tokens", is_flag=True, help="Show subtokens with their labels instead of words.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Encoding of texts read from stdin.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@user_errors
def predict(head_dir, text, model, as_json, top_k, tokens, encoding, device):
    """Label each word of TEXT (or of each line of stdin) with a trained head.

    Prints one `word<TAB>label<TAB>probability<TAB>start<TAB>end` line per word (start and
    end: character offsets in the text), a blank line between texts. Special tokens
    (--tokens) have no label.
    """
    from pipeline.api import Head
    from pipeline.corpus import check_text, decode_bytes, split_lines

    texts = list(text)
    if not texts and (sys.stdin is None or sys.stdin.isatty()):  # would wait on a terminal
        raise click.UsageError("no text given: pass TEXT arguments or pipe lines on stdin")
    if not texts:
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        decoded = decode_bytes(raw, "<stdin>", encoding) if isinstance(raw, bytes) \
            else check_text(raw, "<stdin>")
        texts = [line for line in split_lines(decoded) if line.strip()]
    if not texts:
        raise click.UsageError("no text given (as arguments or on stdin)")
    from pipeline.process import quiet_libraries

    quiet_libraries()
    head = Head.load(head_dir, model=model, device=device)
    for i, result in enumerate(head.predict(texts, top_k=top_k)):
        if as_json:
            click.echo(json.dumps(result if tokens else {k: result[k] for k in ("text", "words")}))
            continue
        if i:
            click.echo()
        for item in result["tokens"] if tokens else result["words"]:
            probability = "" if item["probability"] is None else f"{item['probability']:.4f}"
            click.echo(f"{item['token'] if tokens else item['word']}\t{item['label'] or ''}\t"
                       f"{probability}\t{item['start']}\t{item['end']}")


@main.command()
@click.argument("head_dir", type=click.Path(file_okay=False))
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--split", default=None,
              help="Split to score: a split name or 'all'  [default: test, else dev; all "
                   "examples of a cache without splits].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@user_errors
def evaluate(head_dir, cache_dir, split, device):
    """Score HEAD_DIR's head on CACHE_DIR (same model); print JSON metrics, naming the split."""
    from pipeline.api import Head

    metrics = Head.load(head_dir, device=device).evaluate(cache_dir, split=split)
    click.echo(json.dumps(metrics, indent=2))
    echo_warnings(metrics)
