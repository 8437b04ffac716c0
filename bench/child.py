"""Child processes of the benchmark, so that each run's peak RSS is its own.

    python -m bench.child embed CORPUS CACHE_DIR --model M --result FILE
    python -m bench.child fit CACHE_DIR HEAD_DIR --layers L --result FILE

Each runs the library function behind the `pipeline` command of the same name at its defaults
and writes {"seconds": wall time of that call, imports excluded, "peak_rss_mb": ..., ...} to
FILE as JSON (1 MB = 1e6 bytes). Peak RSS of embed includes the untimed import load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline.store import atomic_write_json


def run(*args: str) -> dict:
    """Run `python -m bench.child ARGS... --result FILE` and return its result."""
    result_path = Path(args[2]).with_name(Path(args[2]).name + ".result.json")
    subprocess.run([sys.executable, "-m", "bench.child", *args, "--result", str(result_path)],
                   check=True)
    result = json.loads(result_path.read_text())
    result_path.unlink()
    return result


def import_model_code(model_path: str) -> None:
    """Load the model once, untimed, so that the timed load pays no Python imports (the
    modelling code transformers imports lazily: about 5 s here) on either side."""
    from transformers import AutoModel, AutoTokenizer

    AutoTokenizer.from_pretrained(model_path)
    AutoModel.from_pretrained(model_path)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    VmHWM belongs to the memory map made at exec, so it is this program's own peak; the
    rusage ru_maxrss of a child also counts the parent's resident pages at fork time.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss is KiB on BSDs, bytes on macOS
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) * 1024 / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("what", choices=["embed", "fit"])
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--model")
    parser.add_argument("--layers", default="all")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)

    if args.what == "embed":
        from pipeline.embedding import embed, resolve_model_path

        import_model_code(resolve_model_path(args.model))
        started = time.perf_counter()
        manifest = embed(args.source, args.out, model=args.model, progress=False)
        result = {"seconds": time.perf_counter() - started, "stats": manifest["stats"]}
    else:
        from pipeline.training import fit

        started = time.perf_counter()
        metrics = fit(args.source, "first_letter", args.out, layers=args.layers)
        result = {"seconds": time.perf_counter() - started, "metrics": metrics}
    atomic_write_json(args.result, result | {"peak_rss_mb": peak_rss_mb()})


if __name__ == "__main__":
    main()
