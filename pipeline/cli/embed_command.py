"""`pipeline embed`: one pass of the frozen model over a corpus into a cache."""

from __future__ import annotations

import click

from pipeline.cli import main, user_errors
from pipeline.cli.options import pop_settings, settings_options
from pipeline.settings import EmbedSettings


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


@main.command()
@click.argument("corpus", type=click.Path(dir_okay=False), required=False)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Cache directory to write (manifest.json + shards/*.h5).")
@click.option("--split", "splits", multiple=True, metavar="NAME=PATH",
              help="A named split (train, dev, test) instead of CORPUS; repeat to put several "
                   "in one cache. `fit` trains on train, early-stops on dev, reports test.")
@click.option("--force", is_flag=True, help="Replace a cache made from other inputs.")
@settings_options(EmbedSettings)
@user_errors
def embed(corpus, out, splits, force, **options):
    """Run the frozen model once over CORPUS and cache its hidden states.

    Complete shards of an interrupted run with the same inputs are kept and the run
    continues where it stopped. Under `torchrun --nproc-per-node N -m pipeline embed ...`
    each process embeds its share of the shards on its own device.
    """
    from pipeline import api
    from pipeline.process import prepare_for_embedding

    settings = EmbedSettings.build("", **pop_settings(EmbedSettings, options))
    split_files = parse_splits(splits, corpus)
    if corpus is not None and split_files:
        raise click.UsageError("give either a CORPUS file or --split NAME=PATH, not both")
    prepare_for_embedding()
    report = api.embed_report(corpus, out, settings, splits=split_files, force=force)
    if report is None:  # a torchrun rank other than 0
        return
    for line in report:
        click.echo(line)
