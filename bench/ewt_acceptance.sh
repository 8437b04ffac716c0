#!/usr/bin/env bash
# Issue 3 acceptance on the real data: UPOS on UD English-EWT and first letters of Moby-Dick.
#   bash bench/ewt_acceptance.sh [WORKDIR]    (default /tmp/ewt-acceptance; needs ../shared/data)
# Prints wall time and peak RSS of every command, the accuracies, and the sweep/fit ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/ewt-acceptance}
E=${EWT:-../shared/data/ud-english-ewt}
MOBY_CACHE=${MOBY_CACHE:-data/cache}
PIPELINE=${PIPELINE:-.venv/bin/pipeline}
rm -rf "$W" && mkdir -p "$W"

timed() {  # timed NAME CMD...: run CMD, keep its output in $W/NAME.log, print wall s and peak RSS
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/$name.time" "$@" > "$W/$name.log" 2>&1
  read -r wall rss < "$W/$name.time"
  printf '%-22s %8.1f s %8.0f MB\n' "$name" "$wall" "$((rss / 1024))"
}
metric() { python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

timed embed_ewt $PIPELINE embed --format conllu --split train=$E/en_ewt-ud-train.conllu \
  --split dev=$E/en_ewt-ud-dev.conllu --split test=$E/en_ewt-ud-test.conllu --out "$W/ewt"
timed fit_linear $PIPELINE fit "$W/ewt" --task upos --out "$W/linear" --epochs 12 --subword mean \
  --schedule cosine
timed fit_mlp $PIPELINE fit "$W/ewt" --task upos --out "$W/mlp" --head mlp --layers 1,2,3,4 \
  --subword mean --hidden 512 --dropout 0.2 --epochs 10 --lr 1e-3 --weight-decay 0.01 \
  --schedule cosine
python3 - "$W" <<'PY'
import sys
W = sys.argv[1]
secs = {n: float(open(f"{W}/{n}.time").read().split()[0]) for n in ("embed_ewt", "fit_linear")}
rss = max(int(open(f"{W}/{n}.time").read().split()[1]) for n in ("embed_ewt", "fit_linear"))
print(f"embed 3 splits + linear fit: {sum(secs.values()):.1f} s wall, peak RSS {rss / 2**20:.2f} GB")
PY
for head in linear mlp; do
  metric "$W/$head/metrics.json" \
    "f\"UPOS test word_accuracy {sys.argv[1].split('/')[-2]:>6}: {m['word_accuracy']:.4f}   majority {m['baselines']['majority']['word_accuracy']:.4f}   lookup {m['baselines']['lookup']['word_accuracy']:.4f}\""
done

# labels added later: a second UPOS copy from the files, timed against the embed pass
timed label_upos $PIPELINE label "$W/ewt" --task upos_again --from $E/en_ewt-ud-train.conllu \
  --from $E/en_ewt-ud-dev.conllu --from $E/en_ewt-ud-test.conllu
timed label_case $PIPELINE label "$W/ewt" --task capitalisation

# sweep over all 7 layers + mix vs one `pipeline fit` per layer with the same settings
timed sweep $PIPELINE sweep "$W/ewt" --task upos --out "$W/sweep" --epochs 4
for layer in 0 1 2 3 4 5 6 mix; do
  timed "fit_layer_$layer" $PIPELINE fit "$W/ewt" --task upos --out "$W/layer-$layer" \
    --layers $layer --epochs 4
done
python3 - "$W" <<'PY'
import sys
W = sys.argv[1]
t = lambda n: float(open(f"{W}/{n}.time").read().split()[0])
fits = sum(t(f"fit_layer_{l}") for l in [*range(7), "mix"])
print(f"sweep {t('sweep'):.1f} s vs 8 fits {fits:.1f} s: ratio {t('sweep') / fits:.2f}")
PY
cat "$W/sweep.log"

# first letters of Moby-Dick on the existing cache: linear (all layers) and MLP (layer 0)
timed moby_linear $PIPELINE fit "$MOBY_CACHE" --out "$W/moby-linear"
timed moby_mlp $PIPELINE fit "$MOBY_CACHE" --out "$W/moby-mlp" --head mlp --layers 0 \
  --hidden 1024 --dropout 0 --epochs 8 --lr 3e-3
for head in linear mlp; do
  metric "$W/moby-$head/metrics.json" \
    "f\"first_letter held-out word_accuracy {sys.argv[1].split('/')[-2]}: {m['word_accuracy']:.4f}   majority {m['baselines']['majority']['word_accuracy']:.4f}   lookup {m['baselines']['lookup']['word_accuracy']:.4f}\""
done
$PIPELINE predict "$W/moby-mlp" "The quick brown fox jumped over the lazy dog"
