"""`python -m bench host`: what the host side of `pipeline embed` can feed a model, no GPU needed.

Runs the real `pipeline.embedding.embed` (reading, tokenizing, batching, gathering, writing and
hashing the shards, the manifest) with a stand-in model that returns hidden states of a given
width at no cost: every forward returns views of one preallocated float16 tensor. Width 768
(bert-base) with 1 layer and with 13 layers, beside, measured in the same run:

- the tokenizer alone (the same Rust batch encoding `embed` uses), real tokens/s;
- the disk's sequential write bandwidth: a timed write plus fsync of `--disk-mb` into the
  output folder, then deleted;
- the implied ceiling: min(tokenizer rate, disk bandwidth / bytes per token), bytes per token
  being 2 x width x layers (float16 states) plus the per-token arrays (input_ids, word_ids,
  example_ids int32, char_spans 2 x int32);
- host_ceiling_ratio_{1_layer,13_layers}: the whole call's tokens/s over that ceiling;
- the process's CPU time during each call (user + system, all threads): the cores it kept
  busy on average and the core microseconds per token, beside the tokenizer's own core time
  per token. On a machine with few cores the ceiling counts the tokenizer on all of them,
  which the rest of the call needs as well: these show how much of them the call used.

`--quick` (for the test suite) reads a slice of the corpus and writes a small disk test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from bench.suite import MOBY_DICK, slice_corpus
from pipeline.corpus import read_corpus
from pipeline.embedding import DEFAULT_MODEL, LoadedModel, resolve_model_path, tokenize
from pipeline.embedding import run as embed_run
from pipeline.settings import EmbedSettings

TOKEN_ARRAY_BYTES = 4 + 4 + 4 + 8  # input_ids, word_ids, example_ids, char_spans (int32)
QUICK_LINES = 400
CHUNK = 64 << 20


class StandInModel(torch.nn.Module):
    """Returns `n_hidden_states` hidden states of (batch, length, width) float16 at no cost:
    views of one buffer filled once (room for `max_tokens`, grown only for a larger batch)."""

    def __init__(self, n_hidden_states: int, width: int, max_tokens: int):
        super().__init__()
        self.n_hidden_states, self.width = n_hidden_states, width
        self.buffer = torch.randn(max_tokens * width).to(torch.float16)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, output_hidden_states=True):
        batch, length = input_ids.shape
        needed = batch * length * self.width
        if self.buffer.numel() < needed:
            self.buffer = torch.randn(needed, dtype=torch.float32).to(torch.float16)
        states = self.buffer[:needed].view(batch, length, self.width)
        return SimpleNamespace(hidden_states=(states,) * self.n_hidden_states)


def stand_in(tokenizer, max_length: int, n_hidden_states: int, width: int) -> LoadedModel:
    return LoadedModel(StandInModel(n_hidden_states, width, EmbedSettings().max_tokens),
                       tokenizer,
                       f"stand-in-{width}x{n_hidden_states}", {"name": f"stand-in-{width}"},
                       max_length, n_hidden_states, width, torch.device("cpu"))


def disk_bandwidth(folder: Path, n_bytes: int) -> dict:
    """Sequential write bandwidth into `folder`: `n_bytes` written in 64 MiB chunks, then
    fsync, timed together; the file is deleted."""
    path = folder / ".bench-host-disk-test"
    chunk = os.urandom(min(CHUNK, n_bytes))
    written = 0
    started = time.perf_counter()
    try:
        with open(path, "wb", buffering=0) as f:
            while written < n_bytes:
                written += f.write(chunk[:n_bytes - written])
            os.fsync(f.fileno())
        seconds = time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)
    return {"bytes": written, "seconds": round(seconds, 3),
            "bytes_per_second": round(written / max(seconds, 1e-9), 1)}


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, every thread included (the Rust
    tokenizer's and the writers' too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tokenizer_rate(tokenizer, texts: list[str], max_length: int) -> dict:
    started, cpu = time.perf_counter(), cpu_seconds()
    encoded = tokenize(tokenizer, texts, max_length)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    tokens = sum(len(e.input_ids) for e in encoded)
    return {"tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
            "core_us_per_token": round(1e6 * cpu / max(tokens, 1), 2)}


def whole_call(corpus: str, out: Path, lm: LoadedModel, layers: str) -> dict:
    """The real embed() with `lm` in place of the loaded model; the cache is removed after."""
    real_load = embed_run.load_model
    embed_run.load_model = lambda *args, **kwargs: lm
    try:
        started, cpu = time.perf_counter(), cpu_seconds()
        manifest = embed_run.embed(corpus, out, layers=layers, dtype="float32", progress=False)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    finally:
        embed_run.load_model = real_load
    tokens = manifest["n_tokens"]
    disk = sum(s["bytes"] for s in manifest["shards"])
    shutil.rmtree(out)
    return {"layers": len(manifest["fingerprint"]["layers"]), "tokens": tokens,
            "seconds": round(seconds, 3), "tokens_per_second": round(tokens / seconds, 1),
            "cpu_seconds": round(cpu, 3), "cores_busy": round(cpu / seconds, 2),
            "core_us_per_token": round(1e6 * cpu / max(tokens, 1), 2),
            "survey_seconds": manifest["run"]["survey_seconds"],
            "embed_seconds": manifest["run"]["embed_seconds"], "disk_bytes": disk,
            "disk_bytes_per_token": round(disk / max(tokens, 1), 1)}


def measure(corpus: str, workdir: Path, width: int, disk_mb: int, tokenizer_path: str) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, use_fast=True)
    max_length = 512
    texts = [e.text for e in read_corpus(corpus).examples]
    results = {"width": width, "corpus": corpus, "examples": len(texts),
               "tokenizer": tokenizer_rate(tokenizer, texts, max_length),
               "disk": disk_bandwidth(workdir, disk_mb << 20)}
    for n_layers, name in ((1, "1_layer"), (13, "13_layers")):
        run = whole_call(corpus, workdir / f"cache-{name}",
                         stand_in(tokenizer, max_length, n_layers, width), "all")
        bytes_per_token = 2 * width * n_layers + TOKEN_ARRAY_BYTES
        disk_bound = results["disk"]["bytes_per_second"] / bytes_per_token
        ceiling = min(results["tokenizer"]["tokens_per_second"], disk_bound)
        run |= {"bytes_per_token": bytes_per_token,
                "disk_bound_tokens_per_second": round(disk_bound, 1),
                "ceiling_tokens_per_second": round(ceiling, 1),
                "ceiling_ratio": round(run["tokens_per_second"] / ceiling, 3)}
        results[name] = run
        results[f"host_ceiling_ratio_{name}"] = run["ceiling_ratio"]
    return results


def table(r: dict) -> str:
    lines = [f"host path, width {r['width']}, {r['examples']:,} examples, "
             f"{os.cpu_count()} cores",
             f"tokenizer alone        {r['tokenizer']['tokens_per_second']:>14,.0f} tokens/s "
             f"({r['tokenizer']['core_us_per_token']:.2f} core us per token)",
             f"disk sequential write  {r['disk']['bytes_per_second'] / 1e6:>14,.1f} MB/s "
             f"({r['disk']['bytes'] / 1e6:,.0f} MB + fsync)",
             f"{'':22} {'1 layer':>14} {'13 layers':>14}"]
    rows = (("whole call tokens/s", "tokens_per_second", ",.0f"),
            ("bytes per token", "bytes_per_token", ",d"),
            ("disk-bound tokens/s", "disk_bound_tokens_per_second", ",.0f"),
            ("ceiling tokens/s", "ceiling_tokens_per_second", ",.0f"),
            ("whole call / ceiling", "ceiling_ratio", ".3f"),
            ("cores busy (average)", "cores_busy", ".2f"),
            ("core us per token", "core_us_per_token", ".2f"))
    for label, key, spec in rows:
        lines.append(f"{label:22} {format(r['1_layer'][key], spec):>14} "
                     f"{format(r['13_layers'][key], spec):>14}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench host", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(MOBY_DICK))
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory (default: the default model's, uncased "
                             "WordPiece like bert-base)")
    parser.add_argument("--disk-mb", type=int, default=None,
                        help="size of the disk write test (default 2048, 64 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_LINES} examples, a small disk test")
    parser.add_argument("--json", dest="json_path", help="also write every figure here")
    parser.add_argument("--workdir", help="output folder (default: a temporary folder)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-host-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        corpus, _ = slice_corpus(args.corpus, QUICK_LINES if args.quick else None, workdir)
        results = measure(corpus, workdir, args.width,
                          args.disk_mb or (64 if args.quick else 2048),
                          args.tokenizer or resolve_model_path(DEFAULT_MODEL))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    print(json.dumps({k: v for k, v in results.items() if k.startswith("host_")}, indent=2))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
