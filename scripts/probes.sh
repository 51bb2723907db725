#!/usr/bin/env bash
# Probes and analysis for the reproduction runs: for every run under RUNS/<scheme>/<model>-seed<k> with a trained
# encoder, write small JSON files to results/<scale>/<scheme>/<model>-seed<k>/ (features are cached under WORK):
#   thesis: syllable-flatten (the thesis protocol: flattened 32 x T module output, bias, 100 epochs, Adam 1e-3,
#           batch 171, 5 probe seeds, label-efficiency curve), syllable-mean (time-mean pooling, 50 epochs, 5 seeds),
#           vowel-max-nobias (the thesis vowel probe: max-pooled over time, no bias);
#   paper:  syllable-mean with random-init and log-mel baselines, vowel-mean (the paper's protocol: time-mean of
#           every module's posterior mean, bias, Adam 1e-3, 50 epochs, batch 64, 3 probe seeds);
#   both:   analysis.json (concentration, Gaussianity, total correlation, disentanglement on the test syllables);
#   both:   ics.json: a decoder, then the interpolation contribution score on the test words (a seeded subset of
#           ICS_PAIRS ordered pairs, default 4000), for the splits in ICS_SCHEMES (default: reference) and the models
#           in ICS_MODELS (default: gim sim);
#           thesis: log-mel decoder of module 2 (index 1), DECODER_EPOCHS default 100 (as the thesis);
#           paper:  waveform-MSE decoder of the last conv module (index 2), DECODER_EPOCHS default 200 (as the paper).
# STAGES (default "probes ics analysis") picks what to run, so two invocations can share the cores, e.g.
#   STAGES="probes analysis" bash scripts/probes.sh ... &  STAGES=ics bash scripts/probes.sh ...
# A run that trained further since it was last probed is probed again.
# Usage: bash scripts/probes.sh thesis|paper DATA RUNS WORK
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:?thesis or paper}; DATA=${2:?dataset}; RUNS=${3:?runs dir}; WORK=${4:?work dir}
case "$SCALE" in thesis|paper) ;; *) echo "error: the first argument must be 'thesis' or 'paper', not '$SCALE'" >&2; exit 2 ;; esac
for run in "$RUNS"/*/*-seed*; do
  [ -f "$run/encoder.pt" ] || continue
  scheme=$(basename "$(dirname "$run")"); name=$(basename "$run")
  res="results/$SCALE/$scheme/$name"; work="$WORK/$scheme/$name"
  epochs=$(awk -F, 'NR > 1 && $2 == "train" {e = $1} END {print e}' "$run/metrics.csv")
  mkdir -p "$res"
  if [ -f "$res/epochs.txt" ] && [ "$(cat "$res/epochs.txt")" != "$epochs" ]; then rm -f "$res"/*.json; fi
  probe() {  # $1 = tag, rest = probe args
    local tag=$1; shift
    [ -f "$res/$tag.json" ] && return 0
    .venv/bin/smooth-infomax probe --run "$run" --data "$DATA" --split-scheme "$scheme" --out "$work/$tag" "$@" >/dev/null
    cp "$work/$tag/"probe_*.json "$res/$tag.json"
  }
  stage() { [[ " ${STAGES:-probes ics analysis} " == *" $1 "* ]]; }
  model=${name%-seed*}
  if stage probes && [ "$SCALE" = thesis ]; then
    probe syllable-flatten --task syllable --pool flatten --epochs 100 --batch-size 171 --seeds 5 --label-efficiency
    probe syllable-mean --task syllable --pool mean --epochs 50 --seeds 5
    probe vowel-max-nobias --task vowel --pool max --no-bias --epochs 100 --batch-size 171 --seeds 5
  elif stage probes; then
    probe syllable-mean --task syllable --pool mean --epochs 50 --batch-size 64 --seeds 3 --baselines
    probe vowel-mean --task vowel --pool mean --epochs 50 --batch-size 64 --seeds 3
  fi
  if stage ics && [[ " ${ICS_SCHEMES:-reference} " == *" $scheme "* ]] && [[ " ${ICS_MODELS:-gim sim} " == *" $model "* ]] &&
     [ ! -f "$res/ics.json" ]; then
    if [ "$SCALE" = thesis ]; then dmod=1; dloss=mel; depochs=${DECODER_EPOCHS:-100}
    else dmod=2; dloss=mse; depochs=${DECODER_EPOCHS:-200}; fi
    dec="$work/decoder-$dmod-$dloss-$depochs-e$epochs"  # keyed on the encoder's epochs: an extended run retrains it
    [ -f "$dec/decoder.pt" ] ||
      .venv/bin/smooth-infomax decoder train --run "$run" --data "$DATA" --module $dmod --loss $dloss \
        --epochs "$depochs" --out "$dec" >/dev/null
    .venv/bin/smooth-infomax ics --run "$run" --decoder "$dec/decoder.pt" \
      --data "$DATA" --split test --max-pairs "${ICS_PAIRS:-4000}" --out "$work/ics" >/dev/null
    .venv/bin/python - "$work/ics/ics.json" "$res/ics.json" "$dmod" "$dloss" "$depochs" <<'PY'
import json, sys
src, dst, module, loss, epochs = sys.argv[1:]
result = json.load(open(src))
result["decoder"] = {"module": int(module), "loss": loss, "epochs": int(epochs)}
with open(dst, "w") as f:
    json.dump(result, f, indent=2)
PY
  fi
  if stage analysis && [ ! -f "$res/analysis.json" ]; then
    .venv/bin/smooth-infomax analyze --run "$run" --data "$DATA" --out "$work/analysis" --no-tsne >/dev/null
    cp "$work/analysis/analysis.json" "$res/analysis.json"
  fi
  echo "$epochs" > "$res/epochs.txt"
done
