#!/usr/bin/env bash
# The main job: sets up .venv when needed, then runs `smooth-infomax run` with the given arguments
# (default: the quick preset on the built-in synthetic speech, report at runs/quick/report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then set -- --preset quick --out runs/quick; fi
exec .venv/bin/smooth-infomax run "$@"
