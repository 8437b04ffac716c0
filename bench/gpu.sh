#!/usr/bin/env bash
# One call on a lent GPU machine (H100/H200), at most 8 minutes:
#   bash bench/gpu.sh            # bert-base over Moby-Dick: 1 / all layers x fp32 / bf16 -> HDF5
# Writes bench-gpu.json in the repo root; pass extra options through, e.g. --peak-tflops 989.
# Where the device has no copy of the corpus or of the default model's package, copy the corpus
# and the tokenizer files (tokenizer.json, vocab.txt, ...) into an ignored folder, carry it, and
# pass --corpus FOLDER/pg2701.txt --tokenizer FOLDER/tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
exec timeout 470 "$PY" -m bench gpu --device cuda --json bench-gpu.json "$@"
