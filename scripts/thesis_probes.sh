#!/usr/bin/env bash
# Probes for the thesis-scale reproduction: for every finished run under RUNS/<scheme>/<model>-seed<k>, write
# results/thesis/<scheme>/<model>-seed<k>/probe_*.json (small JSON only; features are cached under OUT).
# Usage: bash scripts/thesis_probes.sh DATA RUNS OUT
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?dataset}; RUNS=${2:?runs dir}; OUT=${3:?work dir}
for run in "$RUNS"/*/*-seed*; do
  [ -f "$run/encoder.pt" ] || continue
  scheme=$(basename "$(dirname "$run")"); name=$(basename "$run")
  res="results/thesis/$scheme/$name"; work="$OUT/$scheme/$name"
  mkdir -p "$res"
  probe() {  # $1 = tag, rest = probe args
    local tag=$1; shift
    [ -f "$res/$tag.json" ] && return 0
    .venv/bin/smooth-infomax probe --run "$run" --data "$DATA" --split-scheme "$scheme" --out "$work/$tag" "$@" >/dev/null
    cp "$work/$tag/"probe_*.json "$res/$tag.json"
  }
  # thesis protocol: flattened 32 x T module output, bias, 100 epochs, Adam 1e-3, batch 171, 5 repetitions
  probe syllable-flatten --task syllable --pool flatten --epochs 100 --batch-size 171 --seeds 5 --label-efficiency
  # the paper's protocol: time-mean pooling, 50 epochs, batch 64
  probe syllable-mean --task syllable --pool mean --epochs 50 --seeds 5
  # thesis vowel probe: module 1 max-pooled over time, no bias
  probe vowel-max-nobias --task vowel --pool max --no-bias --epochs 100 --batch-size 171 --seeds 5
done
