#!/usr/bin/env bash
# The KL-weight sweep (issue 10): the `demo` preset trained for STEPS steps (default 300) once per KL
# weight, same model, data, steps and seed, each arm then evaluated by benchmarks/tuning/curves.py (held-out
# PSNR/SSIM at 256 px; inspect-latents: KL nats per latent element, mean posterior std, MMD^2 to N(0, I)).
# Two arms at a time, each pinned to one core with one thread (a 2-core machine); ~17 minutes.
#   bash benchmarks/tuning/kl_sweep.sh OUT [--set KEY=VALUE ...]    e.g. --set model.encoder_kwargs.logvar_init=0.0
# Table: .venv/bin/python benchmarks/tuning/curves_table.py OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: kl_sweep.sh OUT [--set KEY=VALUE ...]}; shift
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-300}
mkdir -p "$out"
arm() {  # core, kl weight, extra args
  local core=$1 kl=$2; shift 2
  OMP_NUM_THREADS=1 taskset -c "$core" "$PY" benchmarks/tuning/curves.py --out "$out" --arm "kl$kl" --steps "$STEPS" \
    --every $((STEPS / 2)) --set "loss.kl=$kl" "$@" --latents > "$out/kl$kl.log" 2>&1
}
for pair in "1e-7 1e-2" "1e-6 1e-3" "1e-5 1e-4"; do
  read -r a b <<< "$pair"
  arm 0 "$a" "$@" & arm 1 "$b" "$@" & wait
done
"$PY" benchmarks/tuning/curves_table.py "$out"
