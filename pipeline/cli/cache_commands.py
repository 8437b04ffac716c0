"""Commands on a cache: `info`, `verify`, `label`."""

from __future__ import annotations

import click

from pipeline.cli import main, user_errors


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@user_errors
def info(cache_dir):
    """Describe a cache: model, layers, examples, tokens, bytes, tasks."""
    from pipeline.api import Cache

    for key, value in Cache(cache_dir).info().items():
        click.echo(f"{key + ':':<18}{value}")


@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@user_errors
def verify(cache_dir):
    """Check every file of CACHE_DIR against its manifest (exists, checksums, shapes, dtypes,
    token counts, owner); name each bad one and exit 1 if any is bad."""
    from pipeline.api import verify as verify_cache
    from pipeline.store import CacheError

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
    from pipeline.api import label as label_cache

    result = label_cache(cache_dir, task, list(from_files), format=format_, column=column,
                         label_all=label_all)
    click.echo(f"{result['task']}: {result['n_labels']} labels on {result['n_labelled']:,} "
               f"tokens of {cache_dir} (no forward pass)")
