#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) from a bare checkout: the device image has torch but no install of
# this package, so it runs from src/. Usage: bash benchmarks/gpu_check.sh [OUT_DIR [--budget S]] (default benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}; shift || true
data=()
[ -f data/compact/compact.json ] && data=(--data data/compact)
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} exec python3 benchmarks/gpu_check.py --out "$out/gpu_check.json" "${data[@]}" "$@"
