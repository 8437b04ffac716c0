"""torchrun ranks: a deterministic balanced split of the shards, and a union that equals the
single-process cache (gloo backend, 2 processes on CPU)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.embedding.distributed import assign_shards
from pipeline.embedding import embed
from pipeline.training import fit
from pipeline.store import Cache, verify

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_every_shard_goes_to_exactly_one_rank_balanced_by_tokens(world_size):
    tokens = [300, 290, 310, 305, 120, 299, 301, 40]
    assigned = assign_shards(tokens, world_size)
    assert sorted(i for shards in assigned for i in shards) == list(range(len(tokens)))
    loads = [sum(tokens[i] for i in shards) for shards in assigned]
    assert max(loads) - min(loads) <= max(tokens)
    assert assign_shards(tokens, world_size) == assigned  # deterministic


def test_torchrun_two_ranks_equal_one_process(tiny_model, small_corpus, tmp_path):
    args = ["embed", str(small_corpus), "--model", tiny_model, "--shard-tokens", "300",
            "--dtype", "float32", "--max-tokens", "256"]
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "pipeline",
                           *args, "--out", str(tmp_path / "ranks")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
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
