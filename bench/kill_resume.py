"""Acceptance run for resumable embed: SIGKILL `pipeline embed` at 5 points, resume, compare.

    .venv/bin/python -m bench.kill_resume ../shared/data/moby-dick/pg2701.txt /tmp/kill-resume

Builds an uninterrupted reference cache, then embeds the same corpus into a second
directory, killing the process (SIGKILL) once after each of the first 5 shards has been
written (a little later each time, so the kills land mid-shard, at different depths),
resuming each time; the last run finishes. Every dataset of every final shard must be
byte-identical to the reference's; `pipeline verify` must pass, and fail naming the shard
after one byte of it is flipped. Deletes its directory at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def embed_command(corpus: str, out: Path) -> list[str]:
    return [PIPELINE, "embed", corpus, "--out", str(out)]


def run_and_kill(corpus: str, out: Path, complete_shards: int, delay: float) -> dict:
    """Start embed, wait until `complete_shards` shards exist plus `delay` s, SIGKILL it."""
    proc = subprocess.Popen(embed_command(corpus, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and len(list(out.glob("shards/shard-*.h5"))) < complete_shards + 1:
        time.sleep(0.05)  # +1: wait for this run's first new shard, then the delay
    time.sleep(delay)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"complete_shards": len(list(out.glob("shards/shard-*.h5"))),
            "temp_files": len(list(out.rglob(".*.tmp"))),
            "manifest": (out / "manifest.json").exists(), "finished_before_kill": finished}


def values_bytes(values: np.ndarray) -> bytes:
    """Raw bytes of numbers; the strings themselves (not object pointers) of text datasets."""
    if values.dtype == object:
        return b"\0".join(values.tolist())
    return values.tobytes()


def datasets(path: Path) -> dict[str, bytes]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, values_bytes(np.asarray(obj[()])))
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def flip_byte(path: Path, dataset: str, at: int = 1001) -> None:
    """Flip one bit of a dataset's stored values (contiguous layout: at its file offset)."""
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_offset() + at
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    reference, resumed = args.workdir / "reference", args.workdir / "resumed"
    shutil.rmtree(resumed, ignore_errors=True)
    report = {}
    if not (reference / "manifest.json").exists():  # a finished reference is reused
        started = time.perf_counter()
        subprocess.run(embed_command(args.corpus, reference), check=True,
                       stdout=subprocess.DEVNULL)
        report["uninterrupted_seconds"] = round(time.perf_counter() - started, 1)
    kills = []
    for point, delay in enumerate([0.3, 0.8, 1.3, 1.8, 2.3]):
        kills.append(run_and_kill(args.corpus, resumed, point, delay) | {"delay_s": delay})
    started = time.perf_counter()
    subprocess.run(embed_command(args.corpus, resumed), check=True, stdout=subprocess.DEVNULL)
    report["final_resume_seconds"] = round(time.perf_counter() - started, 1)
    report["kills"] = kills

    names = sorted(p.name for p in reference.glob("shards/*.h5"))
    assert names == sorted(p.name for p in resumed.glob("shards/*.h5")), "shard names differ"
    identical = all(datasets(reference / "shards" / n) == datasets(resumed / "shards" / n)
                    for n in names)
    report["shards"] = len(names)
    report["arrays_byte_identical"] = identical
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (reference, resumed)]
    report["same_shard_boundaries"] = ([(s["first_example"], s["n_examples"]) for s in manifests[0]["shards"]]
                                       == [(s["first_example"], s["n_examples"]) for s in manifests[1]["shards"]])
    verify = subprocess.run([PIPELINE, "verify", str(resumed)], capture_output=True, text=True)
    report["verify_exit"] = verify.returncode
    flip_byte(resumed / "shards" / names[len(names) // 2], "hidden/3")
    verify = subprocess.run([PIPELINE, "verify", str(resumed)], capture_output=True, text=True)
    report["verify_after_flip_exit"] = verify.returncode
    report["verify_after_flip_says"] = verify.stderr.strip().splitlines()[-1]
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(args.workdir)
    ok = (identical and report["same_shard_boundaries"] and report["verify_exit"] == 0
          and report["verify_after_flip_exit"] == 1
          and names[len(names) // 2] in report["verify_after_flip_says"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
