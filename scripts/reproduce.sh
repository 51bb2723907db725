#!/usr/bin/env bash
# Reproduction runs on the artificial speech dataset, at either scale (RESULTS.md §1-3, METHOD §2, §15).
#   thesis: GIM (beta 0, still sampling, as the thesis) vs SIM/V-GIM (beta 0.0035); 32 channels, 2 modules, Adam 0.01
#           with gamma 0.995, batch 171, 800 epochs (~15-20 min of one core per run here).
#   paper:  GIM, SIM (beta 0.01) and CPC; 512 channels, 3 modules + GRU, Adam 2e-4 constant, batch 64. The paper
#           trains 1000 epochs, days on a CPU: EPOCHS is the target of this invocation and a later call continues
#           (constant learning rate, so N epochs in several pieces equal N epochs at once).
# Every run resumes from its last checkpoint; runs that already reached EPOCHS are skipped.
# Usage: bash scripts/reproduce.sh thesis|paper DATA OUT [SEEDS] [SCHEMES] [EPOCHS] [MODELS]
#   defaults  thesis: "2 3 4"  "reference leakage_free"  800   "gim sim"
#             paper:  "2"      "reference"               1000  "gim sim cpc"
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:?thesis or paper}; DATA=${2:?dataset path}; OUT=${3:?output dir}
case "$SCALE" in
  thesis) suffix="-thesis"; SEEDS=${4:-2 3 4}; SCHEMES=${5:-reference leakage_free}; EPOCHS=${6:-800}; MODELS=${7:-gim sim} ;;
  paper)  suffix="";        SEEDS=${4:-2};     SCHEMES=${5:-reference};              EPOCHS=${6:-1000}; MODELS=${7:-gim sim cpc} ;;
  *) echo "error: the first argument must be 'thesis' or 'paper', not '$SCALE'" >&2; exit 2 ;;
esac
for scheme in $SCHEMES; do
  for seed in $SEEDS; do
    for model in $MODELS; do
      run="$OUT/$scheme/$model-seed$seed"
      done_epochs=$(awk -F, 'NR > 1 && $2 == "train" {e = $1} END {print e + 0}' "$run/metrics.csv" 2>/dev/null || echo 0)
      if [ -f "$run/encoder.pt" ] && [ "$done_epochs" -ge "$EPOCHS" ]; then echo "done: $run ($done_epochs epochs)"; continue; fi
      resume=""; [ -f "$run/checkpoints/last.pt" ] && resume="--resume"
      .venv/bin/smooth-infomax train --config "configs/$model-artificial-speech$suffix.yaml" \
        --set data.path="$DATA" --set seed="$seed" --set data.split_scheme="$scheme" --set train.epochs="$EPOCHS" \
        --set train.progress=false --set train.log_tensorboard=false --out "$run" $resume
    done
  done
done
