"""The benchmark suite and the GPU benchmark run end to end in their --quick forms.

Structure only: a timing depends on the machine, so no test asserts one.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = ("embed_speedup", "fit_speedup", "time_to_reference_accuracy_ratio",
                 "accuracy_at_reference_time", "fit_peak_rss_mb", "fit_layers_mb")


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_quick_benchmark_writes_the_contract_keys(tiny_model, small_corpus, tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("--quick", "--corpus", str(small_corpus), "--model", tiny_model,
                     "--json", str(out), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    for key in CONTRACT_KEYS:
        assert key in results
    for key in ("embed_speedup", "batching_speedup", "fit_speedup", "fit_peak_rss_mb",
                "fit_layers_mb"):
        assert results[key] > 0
    # the tiny cache holds 3 hidden states of width 32, stored as float16
    n_tokens = results["pipeline"]["embed"]["real_tokens"]
    assert results["fit_layers_mb"] == n_tokens * 32 * 2 * 3 / 1e6
    assert results["disk_bytes_per_token_per_layer"] >= 64
    reference = results["reference"]
    assert reference["train"]["steps"] == 20 and reference["embed"]["padding"] > 0
    assert 0 <= reference["held_out"]["word_accuracy"] <= 1
    turns = results["pipeline"]["embed_in_turns"]
    assert len(turns["rounds"]) == 2
    assert results["embed_speedup"] == sum(r["ratio"] for r in turns["rounds"]) / 2  # median
    assert not list((tmp_path / "work").glob("cache-round*"))  # only the first cache is kept
    paired = results["pipeline"]["fit_speed_paired"]
    assert len(paired["rounds"]) == 3 and paired["reference_steps"] == 2
    assert results["fit_speedup"] == sorted(r["ratio"] for r in paired["rounds"])[1]
    checkpoints = results["pipeline"]["time_to_accuracy"]["checkpoints"]
    assert [c["seconds"] for c in checkpoints] == sorted(c["seconds"] for c in checkpoints)
    assert checkpoints[0]["seconds"] > results["pipeline"]["embed"]["seconds"]
    for line in ("embed real tokens/s", "fit us/training token, 1 layer", "peak RSS MB: fit"):
        assert line in done.stdout
    assert json.loads(done.stdout[done.stdout.index("{"):])["fit_layers_mb"] == \
        results["fit_layers_mb"]


def test_quick_gpu_benchmark_runs_on_cpu(small_corpus, tmp_path):
    out = tmp_path / "gpu.json"
    done = run_bench("gpu", "--quick", "--device", "cpu", "--corpus", str(small_corpus),
                     "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["bf16_peak_tflops"] is None
    runs = {(r["layers"], r["dtype"]) for r in results["runs"]}
    assert runs == {(layers, dtype) for layers in ("1 layer (last)", "all 3 layers")
                    for dtype in ("float32", "bfloat16")}
    for run in results["runs"]:
        assert run["tokens_per_second"] > 0 and run["gflop_per_token"] > 0
    one, every = results["runs"][0], results["runs"][2]
    assert every["disk_bytes"] > one["disk_bytes"]  # all layers take more room than one


def test_quick_host_benchmark_reports_every_figure(small_corpus, tmp_path):
    out = tmp_path / "host.json"
    done = run_bench("host", "--quick", "--corpus", str(small_corpus), "--width", "64",
                     "--disk-mb", "4", "--json", str(out), "--workdir", str(tmp_path / "w"))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["tokenizer"]["tokens_per_second"] > 0
    assert results["disk"]["bytes"] == 4 << 20 and results["disk"]["bytes_per_second"] > 0
    for name, layers in (("1_layer", 1), ("13_layers", 13)):
        run = results[name]
        assert run["layers"] == layers and run["tokens"] == results["tokenizer"]["tokens"]
        assert run["bytes_per_token"] == 2 * 64 * layers + 20
        assert run["disk_bytes"] >= run["tokens"] * run["bytes_per_token"]
        assert run["ceiling_tokens_per_second"] == min(
            results["tokenizer"]["tokens_per_second"], run["disk_bound_tokens_per_second"])
        assert results[f"host_ceiling_ratio_{name}"] == run["ceiling_ratio"] > 0
        # from the rounded seconds of a call this short, only to within a few percent
        assert run["cores_busy"] == pytest.approx(run["cpu_seconds"] / run["seconds"], rel=0.05)
        assert run["core_us_per_token"] == pytest.approx(
            1e6 * run["cpu_seconds"] / run["tokens"], rel=0.05)
    assert not list((tmp_path / "w").glob("cache-*"))  # the caches and disk test are removed
    assert not list((tmp_path / "w").glob(".bench-host-*"))
    assert results["tokenizer"]["core_us_per_token"] >= 0
    for line in ("whole call / ceiling", "cores busy (average)", "core us per token"):
        assert line in done.stdout
