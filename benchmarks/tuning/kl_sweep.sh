#!/usr/bin/env bash
# Kept for old commands: the KL-weight sweep is benchmarks/tuning/kl_sweep.py now (2000 steps per weight at
# 64 px, logvar init 0, LDM's equivalent weight to 1e-3; see its docstring). This wrapper passes its arguments on:
#   bash benchmarks/tuning/kl_sweep.sh --out bench-results/kl-sweep      (same as python benchmarks/tuning/kl_sweep.py ...)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
exec "$PY" benchmarks/tuning/kl_sweep.py "$@"
