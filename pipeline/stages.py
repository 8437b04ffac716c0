"""DVC stages: each reads its own params.yaml section through pipeline.settings and calls the
same API the CLI calls.

    python -m pipeline.stages corpus data/moby-dick/pg2701.txt
    python -m pipeline.stages split_corpus ewt_corpus
    python -m pipeline.stages embed data/moby-dick/pg2701.txt data/cache
    python -m pipeline.stages embed_splits data/ewt-cache ewt_embed ewt_corpus
    python -m pipeline.stages fit moby_linear        # params.yaml heads.moby_linear
"""

from __future__ import annotations

import hashlib
import json
import sys
import urllib.request
from pathlib import Path

from pipeline.errors import PipelineError, os_error_message, report_file_size_limit
from pipeline.params import load_params, load_section
from pipeline.settings import SettingsError
from pipeline.store import atomic_write, atomic_write_json, read_json

HEADS_DIR = Path("data/heads")
LIVE_DIR = Path("data/live")  # DVCLive: per-epoch plots and final metrics of each head


def fetch(url: str, path: Path, sha256: str | None = None) -> None:
    """Download `url` to `path` unless the file there came from that very url (recorded in a
    sidecar `<file>.source.json`), so that a changed url always fetches again. A file placed
    by hand (no sidecar) is used as it is, and recorded as coming from `url`."""
    source = path.with_name(path.name + ".source.json")
    recorded = read_json(source).get("url") if source.exists() else None
    if path.exists() and recorded in (None, url):
        print(f"{path}: using the file in place ({'placed by hand' if recorded is None else url})")
    else:
        print(f"{path}: downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                raw = response.read()
        except OSError as err:
            raise PipelineError(f"cannot download {url} ({err}); offline, place the file at "
                                f"{path}") from None
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(raw))
    if sha256 is not None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise PipelineError(f"{path}: sha256 {digest}, params.yaml says {sha256}")
    atomic_write_json(source, {"url": url})


def corpus(path: str) -> None:
    settings = load_section("corpus")
    fetch(settings.url, Path(path), settings.sha256)


def split_corpus(section: str) -> None:
    """Each split file of `section` (train, dev, test), from base_url + its file name."""
    settings = load_section(section)
    for name in ("train", "dev", "test"):
        path = Path(getattr(settings, name))
        fetch(settings.base_url + path.name, path)


def embed(corpus_path: str, cache_dir: str, section: str = "embed") -> None:
    from pipeline import api
    from pipeline.process import prepare_for_embedding

    prepare_for_embedding()

    for line in api.embed_report(corpus_path, cache_dir, load_section(section)) or []:
        print(line)


def embed_splits(cache_dir: str, section: str, corpus_section: str) -> None:
    """Embed the train/dev/test files named by `corpus_section` into one cache."""
    from pipeline import api
    from pipeline.process import prepare_for_embedding

    prepare_for_embedding()

    files = load_section(corpus_section)
    splits = {name: getattr(files, name) for name in ("train", "dev", "test")}
    for line in api.embed_report(None, cache_dir, load_section(section), splits=splits) or []:
        print(line)


def fit(name: str) -> None:
    """Train head `name` of params.yaml's `heads` on the cache its entry names; per-epoch
    figures and the final metrics go through DVCLive to data/live/<name>."""
    from dvclive import Live

    from pipeline import api

    entry = load_params().get("heads", {}).get(name)
    settings = load_section(f"heads.{name}")
    if not isinstance(entry, dict) or not isinstance(entry.get("cache"), str):
        raise SettingsError(f"params.yaml: heads.{name}.cache: give the cache directory to read")
    with Live(str(LIVE_DIR / name), dvcyaml=None, save_dvc_exp=False) as live:
        def on_epoch(record: dict) -> None:
            for key, value in record.items():
                if key != "epoch":
                    live.log_metric(key, value)
            live.next_step()

        head = api.fit(entry["cache"], out=HEADS_DIR / name, settings=settings,
                       on_epoch=on_epoch)
        live.summary = {key: value for key, value in head.metrics.items()
                        if key in ("word_accuracy", "token_accuracy", "macro_f1", "split")}
        live.summary["baselines"] = {key: {"word_accuracy": base["word_accuracy"]}
                                     for key, base in head.metrics.get("baselines", {}).items()}
    print(json.dumps(head.metrics.get("word_accuracy")))


STAGES = {"corpus": corpus, "split_corpus": split_corpus, "embed": embed,
          "embed_splits": embed_splits, "fit": fit}


def main(argv: list[str]) -> None:
    report_file_size_limit()
    if not argv or argv[0] not in STAGES:
        sys.exit(f"Error: give a stage: {', '.join(STAGES)}")
    try:
        STAGES[argv[0]](*argv[1:])
    except PipelineError as err:
        sys.exit(f"Error: {argv[0]}: {err}")
    except OSError as err:  # a full disk or a file size limit says what to do
        sys.exit(f"Error: {argv[0]}: {os_error_message(err)}")


if __name__ == "__main__":
    main(sys.argv[1:])
