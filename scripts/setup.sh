#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with the CPU build of PyTorch and smooth-infomax (editable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# The CPU wheel first: a bare "torch" requirement with nothing installed would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[synth,tensorboard,dev,hf]"
# Headless Chromium for the report's browser test (Debian package; needs root, skipped otherwise).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser test will be skipped"
fi
echo "set-up done: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
