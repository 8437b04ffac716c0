"""DVC stages: one function per stage, each reading only its own params.yaml section.

    python -m pipeline.stages corpus data/moby-dick/pg2701.txt
    python -m pipeline.stages embed data/moby-dick/pg2701.txt data/cache
    python -m pipeline.stages fit data/cache data/head
    python -m pipeline.stages fit data/cache data/head-mlp fit_mlp   # another fit section
    python -m pipeline.stages split_corpus ewt_corpus
    python -m pipeline.stages embed_splits data/ewt-cache ewt_embed ewt_corpus
"""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from dataclasses import asdict
from pathlib import Path

from pipeline.config import load_section
from pipeline.errors import PipelineError
from pipeline.store import atomic_write


def corpus(path: str) -> None:
    """Download the corpus unless it was placed at `path` beforehand (offline use)."""
    params = load_section("corpus")
    if Path(path).exists():
        print(f"corpus: using {path} as placed")
        return
    print(f"corpus: downloading {params.url} -> {path}")
    try:
        with urllib.request.urlopen(params.url, timeout=60) as response:
            raw = response.read()
    except OSError as err:
        sys.exit(f"corpus: cannot download {params.url} ({err}); offline, place the file at {path}")
    if params.sha256 and hashlib.sha256(raw).hexdigest() != params.sha256:
        sys.exit(f"corpus: {params.url} has sha256 {hashlib.sha256(raw).hexdigest()}, "
                 f"params say {params.sha256}")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(raw))


def split_corpus(section: str) -> None:
    """Each split file of `section` (train, dev, test): used as placed, else downloaded."""
    params = load_section(section)
    for name in ("train", "dev", "test"):
        path = getattr(params, name)
        if Path(path).exists():
            print(f"{section}: {name}: using {path} as placed")
            continue
        url = params.base_url + Path(path).name
        print(f"{section}: {name}: downloading {url} -> {path}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                raw = response.read()
        except OSError as err:
            sys.exit(f"{section}: cannot download {url} ({err}); offline, place the file at "
                     f"{path}")
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(raw))


def embed_stage(corpus_path: str, cache_dir: str) -> None:
    from pipeline.embed import embed

    params = asdict(load_section("embed"))
    embed(corpus_path, cache_dir, **params)


def embed_splits_stage(cache_dir: str, section: str, corpus_section: str) -> None:
    """Embed the train/dev/test files named by `corpus_section` into one cache."""
    from pipeline.embed import embed

    files = load_section(corpus_section)
    splits = {name: getattr(files, name) for name in ("train", "dev", "test")}
    embed(None, cache_dir, splits=splits, **asdict(load_section(section)))


def fit_stage(cache_dir: str, head_dir: str, section: str = "fit") -> None:
    from pipeline.fit import fit

    params = asdict(load_section(section))
    fit(cache_dir, out=head_dir, **params)


STAGES = {"corpus": corpus, "embed": embed_stage, "fit": fit_stage,
          "split_corpus": split_corpus, "embed_splits": embed_splits_stage}

if __name__ == "__main__":
    name, *args = sys.argv[1:]
    try:
        STAGES[name](*args)
    except PipelineError as err:
        sys.exit(f"{name}: {err}")
