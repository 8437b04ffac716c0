"""torchrun ranks: a deterministic split of the byte ranges, each rank reading only its share,
and a union byte-identical to the single-process cache (gloo backend, CPU processes)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.embedding.distributed import Ranks, share
from pipeline.embedding import embed
from pipeline.training import fit
from pipeline.store import Cache, verify
from test_resume import arrays

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@pytest.mark.parametrize("n_units", [0, 1, 5, 40])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_every_range_goes_to_exactly_one_rank_in_order(n_units, world_size):
    shares = [share(n_units, Ranks(rank, world_size)) for rank in range(world_size)]
    assert [i for s in shares for i in s] == list(range(n_units))  # contiguous, in rank order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def torchrun(n: int, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", str(n), "-m",
                           "pipeline", *args], capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})  # one order of sums
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_torchrun_two_ranks_equal_one_process(tiny_model, small_corpus, tmp_path):
    args = ["embed", str(small_corpus), "--model", tiny_model, "--shard-tokens", "300",
            "--dtype", "float32", "--max-tokens", "256"]
    proc = torchrun(2, [*args, "--out", str(tmp_path / "ranks")])
    assert proc.stdout.count("examples,") == 1  # rank 0 alone reports
    embed(str(small_corpus), tmp_path / "one", model=tiny_model, shard_tokens=300,
          dtype="float32", max_tokens=256, progress=False)
    ranks, one = Cache(tmp_path / "ranks"), Cache(tmp_path / "one")
    assert ranks.manifest["settings"]["ranks"] == 2
    assert [(s["first_example"], s["n_examples"]) for s in ranks.shards] == \
        [(s["first_example"], s["n_examples"]) for s in one.shards]
    example_ids = ranks.read("example_ids")
    assert np.unique(example_ids).tolist() == list(range(one.n_examples))  # each example once
    assert np.array_equal(example_ids, one.read("example_ids"))
    assert ranks.texts() == one.texts()
    for name in ("input_ids", "word_ids", "char_spans"):
        assert np.array_equal(ranks.read(name), one.read(name))
    for layer in one.layers:
        np.testing.assert_allclose(ranks.read_layer(layer), one.read_layer(layer), atol=1e-2)
    assert all(not problems for _, problems in verify(tmp_path / "ranks"))
    metrics = [fit(str(tmp_path / c), "first_letter", str(tmp_path / f"head-{c}"), epochs=3,
                   device="cpu") for c in ("ranks", "one")]
    assert round(metrics[0]["word_accuracy"], 3) == round(metrics[1]["word_accuracy"], 3)


def many_lines(path: Path, n: int) -> Path:
    """n lines of varied length (about 60 bytes each), CRLF endings."""
    words = "call me ishmael some years ago never mind how long precisely having little".split()
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 11)) + f" {i}."
             for i in range(n)]
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    return path


def test_each_of_two_ranks_reads_about_half_and_the_cache_is_byte_identical(tiny_model,
                                                                             tmp_path):
    """Several byte ranges: each rank reads and tokenizes only its own, about half of the
    corpus; every dataset of every shard equals the single process's, byte for byte."""
    corpus = many_lines(tmp_path / "corpus.txt", 5000)  # ~5 ranges of 64 KiB
    args = ["embed", str(corpus), "--model", tiny_model, "--shard-tokens", "2000",
            "--dtype", "float32", "--layers", "2"]
    torchrun(2, [*args, "--out", str(tmp_path / "ranks")])
    torchrun(1, [*args, "--out", str(tmp_path / "one")])
    ranks, one = Cache(tmp_path / "ranks").manifest, Cache(tmp_path / "one").manifest
    size = corpus.stat().st_size
    stats = ranks["stats"]
    assert stats["ranges"] >= 4
    assert stats["rank0_bytes"] + stats["rank1_bytes"] == size == one["stats"]["rank0_bytes"]
    for rank in (0, 1):  # about half each: the share differs by at most one range
        assert abs(stats[f"rank{rank}_bytes"] - size / 2) <= 65536
        assert 0.3 < stats[f"rank{rank}_examples"] / stats["examples"] < 0.7
    assert stats["rank0_real_tokens"] + stats["rank1_real_tokens"] == stats["real_tokens"]
    assert ranks["shards"] == one["shards"] and ranks["fingerprint"] == one["fingerprint"]
    assert arrays(tmp_path / "ranks") == arrays(tmp_path / "one")
