#!/usr/bin/env bash
# Thesis-scale reproduction (RESULTS.md §1): GIM (beta 0, still sampling, as the thesis) vs SIM/V-GIM (beta 0.0035),
# 32 channels, 2 modules, 800 epochs, on the artificial speech dataset; seeds and split schemes as arguments.
# Usage: bash scripts/reproduce_thesis.sh DATA OUT "2 3 4" "reference leakage_free" [EPOCHS]
# Each run resumes if interrupted; finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?dataset path}; OUT=${2:?output dir}; SEEDS=${3:-2}; SCHEMES=${4:-reference}; EPOCHS=${5:-800}
for scheme in $SCHEMES; do
  for seed in $SEEDS; do
    for model in gim sim; do
      run="$OUT/$scheme/$model-seed$seed"
      if [ -f "$run/encoder.pt" ]; then echo "done: $run"; continue; fi
      resume=""; [ -f "$run/checkpoints/last.pt" ] && resume="--resume"
      .venv/bin/smooth-infomax train --config "configs/$model-artificial-speech-thesis.yaml" \
        --set data.path="$DATA" --set seed="$seed" --set data.split_scheme="$scheme" --set train.epochs="$EPOCHS" \
        --set train.progress=false --set train.log_tensorboard=false --out "$run" $resume
    done
  done
done
