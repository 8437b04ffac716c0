"""The Python API: the same steps as the CLI and the DVC stages, for notebooks.

    import pipeline
    cache = pipeline.embed("corpus.txt", "cache")              # one pass of the model
    features = cache.features(layers=[2], task="first_letter")  # numpy, one row per word
    head = pipeline.fit(cache, out="head", task="first_letter")
    head.predict(["Call me Ishmael."])                          # model loaded once

Keyword settings are those of pipeline.settings (EmbedSettings, FitSettings), checked
before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.api.cache import Cache, WordFeatures
from pipeline.api.head import Head
from pipeline.errors import PipelineError
from pipeline.settings import EmbedSettings, FitSettings, SettingsError, with_presets


def _settings(kind, settings, options: dict):
    """`settings` (or the defaults) updated with keyword options, checked."""
    given = settings.given() if settings is not None else {}
    return kind.build("", **(given | options)) if options or settings is None else settings


def embed(corpus: str | Path | None, out: str | Path, *, splits: dict[str, str] | None = None,
          force: bool = False, progress: bool = True, settings: EmbedSettings | None = None,
          **options) -> Cache:
    """Run the frozen model once over `corpus` (or over named `splits`, e.g. train/dev/test)
    and cache its hidden states at `out`; resumes an interrupted run with the same inputs.
    A labelled corpus (conllu, conll) also stores its label column as a task."""
    manifest = _run_embed(corpus, out, splits, force, progress,
                          _settings(EmbedSettings, settings, options))
    return None if manifest is None else Cache(out)


def _run_embed(corpus, out, splits, force, progress, settings: EmbedSettings) -> dict | None:
    from pipeline.embedding import embed as run_embed

    def add_corpus_labels(manifest: dict) -> None:
        if settings.format == "text":
            return
        files = list(splits.values()) if splits else [str(corpus)]
        label(out, settings.label_task, files, format=settings.format, column=settings.column,
              label_all=settings.label_all)

    return run_embed(None if corpus is None else str(corpus), str(out),
                     **settings.model_dump(), splits=splits, force=force, progress=progress,
                     on_finished=add_corpus_labels)


def embed_report(corpus, out, settings: EmbedSettings, splits=None, force=False) -> list[str] | None:
    """Run embed as the CLI does and return its summary lines (None on ranks other than 0)."""
    manifest = _run_embed(corpus, out, splits, force, True, settings)
    if manifest is None:
        return None
    stats = manifest.get("stats", {})
    lines = [f"{manifest['n_examples']:,} examples, {manifest['n_tokens']:,} tokens in "
             f"{len(manifest['shards'])} shards -> {out}"]
    run = manifest.get("run", {})
    reused = run.get("reused_shards", 0)
    if run.get("embedded_tokens"):
        lines.append(f"{run['tokens_per_second']:,.0f} real tokens/s over "
                     f"{run['embed_seconds']} s; padding "
                     f"{1 - run['embedded_tokens'] / max(1, run['padded_tokens']):.1%}"
                     + (f"; {reused} complete shard(s) of an earlier run kept" if reused else ""))
    else:
        lines.append(f"every shard was already complete ({reused} kept): nothing embedded")
    lines.append(f"{stats.get('truncated_examples', 0)} examples truncated, "
                 f"{stats.get('windowed_examples', 0)} windowed ({stats.get('windows', 0)} "
                 f"windows)")
    return lines


def default_task(cache: Cache) -> str:
    """The labels the corpus came with (the first stored task that is not computed), else
    first_letter."""
    from pipeline.tasks import COMPUTED

    from_corpus = [name for name in cache.tasks if name not in COMPUTED]
    return from_corpus[0] if from_corpus else "first_letter"


def fit(cache: Cache | str | Path, out: str | Path, *, settings: FitSettings | None = None,
        on_epoch: Callable[[dict], None] | None = None, **options) -> Head:
    """Train a head on the cached features (the transformer is not run) and save it at `out`.
    Settings not given take the best measured preset for the task and head."""
    from pipeline.tasks import COMPUTED
    from pipeline.training.fit import fit as train

    cache = cache if isinstance(cache, Cache) else Cache(cache)
    chosen = _settings(FitSettings, settings, options)
    task = chosen.task or default_task(cache)
    chosen = with_presets(chosen, task not in COMPUTED, cache.layers)
    metrics = train(str(cache.path), task, str(out), **chosen.model_dump(exclude={"task"}),
                    on_epoch=on_epoch)
    head = Head.load(out, device=chosen.device)
    head.train_seconds = metrics["train"]["seconds"]
    return head


def sweep(cache: Cache | str | Path, out: str | Path, *, settings: FitSettings | None = None,
          **options) -> dict:
    """One head per cached layer (of `layers`) plus a layer mix, trained side by side."""
    from pipeline.tasks import COMPUTED
    from pipeline.training.sweep import sweep as run_sweep

    cache = cache if isinstance(cache, Cache) else Cache(cache)
    chosen = _settings(FitSettings, settings, options)
    task = chosen.task or default_task(cache)
    chosen = with_presets(chosen, task not in COMPUTED, cache.layers)
    return run_sweep(str(cache.path), task, str(out),
                     **chosen.model_dump(exclude={"task", "selectivity"}))


def label(cache: Cache | str | Path, task: str | None, files: list[str] | None = None,
          **options) -> dict:
    """Add a task's labels to a cache without the transformer: a computed task, or the label
    column of CoNLL-U / CoNLL files holding the cache's words."""
    from pipeline.labels import label as add_labels

    return add_labels(str(getattr(cache, "path", cache)), task, files or [], **options)


def verify(cache: Cache | str | Path) -> list[tuple[str, list[str]]]:
    """Every file of a cache checked against its manifest: (name, problems) per file."""
    from pipeline.store import verify as verify_cache

    return verify_cache(getattr(cache, "path", cache))


__all__ = ["Cache", "Head", "WordFeatures", "embed", "fit", "sweep", "label", "verify",
           "EmbedSettings", "FitSettings", "PipelineError", "SettingsError"]
