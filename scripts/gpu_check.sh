#!/usr/bin/env bash
# The GPU day in one command (issue 16 item 4): on one CUDA GPU, in under 8 minutes,
#   (a) the GPU-marked tests (tests/test_gpu.py): CUDA forward/backward of every registered model, bf16
#       autocast and fp16 + GradScaler train steps, a resume on CUDA, encode-dataset on CUDA with pinned memory;
#   (b) benchmarks/speed/gpu_bench.py: litevae-b vs SD-VAE encoder img/s and peak memory at 256 px, batch 32, bf16,
#       and the phase-A / phase-B train-step img/s with LPIPS-VGG;
#   (c) OUT/gpu_bench.json and OUT/gpu_bench.md (a table for BENCHMARKS.md), OUT/gpu_tests.log and
#       OUT/gpu_tests.xml (JUnit), OUT/environment.txt.
# The bench runs even when a test fails, so one short GPU window yields both; the exit status is non-zero
# if either part failed.
#
# Usage:   bash scripts/gpu_check.sh [--dry-run] [OUT]      (OUT defaults to bench-results/gpu)
#   --dry-run  on a machine without CUDA: the GPU tests are collected and skipped, and the bench runs its
#              tiny CPU mode; `make test` runs this to keep the script working.
# Python: $PY, else .venv/bin/python (make install), else python3. Needs the package's dependencies there.
set -uo pipefail

cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-bench-results/gpu}"
if [[ -n "${PY:-}" ]]; then :; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONUNBUFFERED=1

start=$(date +%s)
stamp() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - start ))s] $*"; }

has_cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo "?")
if [[ "$has_cuda" == "?" ]]; then
    echo "error: $PY cannot import torch; run make install or set PY=/path/to/python" >&2
    exit 2
fi
if [[ "$has_cuda" != 1 && "$DRY" != 1 ]]; then
    echo "error: no CUDA device visible to $PY; on a CPU machine use: bash scripts/gpu_check.sh --dry-run" >&2
    exit 2
fi
mkdir -p "$OUT"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda",
torch.version.cuda, "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# (a) GPU tests: 5-minute cap (about 1-2 minutes expected on an H100/H200).
stamp "GPU tests (pytest -m gpu)"
timeout 300 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py --junitxml="$OUT/gpu_tests.xml" \
    2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
stamp "GPU tests exit status $tests_rc"

# (b, c) Benchmark: 2.5-minute cap (about 1 minute expected).
stamp "benchmark (benchmarks/speed/gpu_bench.py)"
bench_args=(--out "$OUT")
if [[ "$DRY" == 1 ]]; then bench_args+=(--dry-run); fi
timeout 150 "$PY" -W ignore::UserWarning benchmarks/speed/gpu_bench.py "${bench_args[@]}"
bench_rc=$?
stamp "benchmark exit status $bench_rc"

echo "gpu_check: tests rc=$tests_rc, bench rc=$bench_rc, $(( $(date +%s) - start )) s; outputs in $OUT"
[[ "$tests_rc" == 0 && "$bench_rc" == 0 ]]
