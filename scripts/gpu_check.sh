#!/usr/bin/env bash
# The GPU window in one command (issues 16, 22, 26): on one CUDA GPU, in under 10 minutes, offline.
#   (0) wheels: if wheels/ holds a `make gpu-wheels` download, they are installed from it, with no index;
#   (1) dependencies: which optional packages import; each missing one prints a `skip:` line naming what it skips;
#   (2) benchmarks/speed/gpu_bench.py (budget 6 min): B-recipe train-step img/s and peak memory at 16/32/8/2
#       images per GPU with channels_last, cudnn.benchmark, LPIPS bf16, `precision: auto` and compiled arms, a
#       1-rank NCCL DDP step, the loader, litevae-b vs SD-VAE encoders eager/compiled, phase A/B eager/compiled;
#   (3) the GPU-marked tests (tests/test_gpu.py, 2.5 min cap): every model on CUDA, bf16/fp16 train steps,
#       a resume, encode-dataset with pinned memory.
# Outputs in OUT, each written as soon as its part ends: environment.txt, dependencies.txt, gpu_bench.json +
# gpu_bench.md (rewritten after every arm), gpu_tests.log + gpu_tests.xml (JUnit), and gpu_check.json +
# gpu_check.md (one entry per part, rewritten after each). The limits send SIGINT (`timeout -s INT`): pytest
# still writes its report, the bench writes what it measured. The exit status is non-zero if a part failed.
#
# Needs (the minimal set): torch with CUDA, torchvision, numpy, pillow, pyyaml, rich; pytest for part 3.
# Every other dependency is optional here (pywavelets, lpips, tensorboard, webdataset, clean-fid, diffusers, ...).
# Carry them with `make gpu-wheels` on a machine with the package registries (README, "GPU check").
#
# Usage:   bash scripts/gpu_check.sh [--dry-run] [OUT]      (OUT defaults to bench-results/gpu)
#   --dry-run  on a machine without CUDA: the bench runs its tiny CPU mode and the GPU tests are collected and
#              skipped; `make test` runs this to keep the script working.
# Environment: PY (python; else .venv/bin/python, else python3), GPU_CHECK_BENCH_S (360), GPU_CHECK_TESTS_S
# (150), GPU_CHECK_WHEELS (wheels).
set -uo pipefail

cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:-bench-results/gpu}"
if [[ -n "${PY:-}" ]]; then :; elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
BENCH_S="${GPU_CHECK_BENCH_S:-360}"
TESTS_S="${GPU_CHECK_TESTS_S:-150}"
WHEELS="${GPU_CHECK_WHEELS:-wheels}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package from this tree: nothing needs installing

start=$(date +%s)
stamp() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - start ))s] $*"; }

# record PART STATUS SECONDS NOTE: OUT/gpu_check.json and OUT/gpu_check.md, rewritten after each part.
record() {
    "$PY" - "$OUT" "$@" <<'EOF' || true
import json, sys, time
from pathlib import Path
out, part, status, seconds, note = Path(sys.argv[1]), *sys.argv[2:6]
path = out / "gpu_check.json"
doc = json.loads(path.read_text()) if path.is_file() else {"parts": []}
doc["parts"].append({"part": part, "status": status, "seconds": int(seconds), "note": note,
                     "at": time.strftime("%H:%M:%S")})
path.write_text(json.dumps(doc, indent=1) + "\n")
rows = [f"| {p['part']} | {p['status']} | {p['seconds']} | {p['note'].replace('|', '/')} |" for p in doc["parts"]]
(out / "gpu_check.md").write_text("| part | status | s | note |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
EOF
}

# One torch import answers both: is CUDA there, and what this machine is (environment.txt below).
env_text=$("$PY" -c 'import sys, torch
print(int(torch.cuda.is_available()))
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda, "| device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>/dev/null) || env_text="?"
has_cuda=$(head -1 <<<"$env_text")
if [[ "$has_cuda" == "?" ]]; then
    echo "error: $PY cannot import torch; install torch with CUDA, or set PY=/path/to/python" >&2
    exit 2
fi
if [[ "$has_cuda" != 1 && "$DRY" != 1 ]]; then
    echo "error: no CUDA device visible to $PY; on a CPU machine use: bash scripts/gpu_check.sh --dry-run" >&2
    exit 2
fi
mkdir -p "$OUT"

# (0) wheels carried in the tree (make gpu-wheels): installed offline, before anything imports them.
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    t=$(date +%s)
    stamp "installing the carried wheels from $WHEELS/ (--no-index)"
    if "$PY" scripts/gpu_wheels.py install --dest "$WHEELS" >"$OUT/wheels_install.log" 2>&1; then
        record wheels ok $(( $(date +%s) - t )) "installed from $WHEELS/"
    else
        echo "skip: the wheels in $WHEELS/ did not install (see $OUT/wheels_install.log); going on with what imports"
        record wheels failed $(( $(date +%s) - t )) "see wheels_install.log"
    fi
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    tail -n +2 <<<"$env_text"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
record environment ok $(( $(date +%s) - start )) "$(tail -n +2 "$OUT/environment.txt" | head -1)"

# (1) dependencies: required ones stop the check with one line; each missing optional one says what it skips.
"$PY" - > "$OUT/dependencies.txt" <<'EOF'
import importlib
REQUIRED = {"torch": "everything", "torchvision": "the LPIPS stand-in", "numpy": "the package", "PIL": "the package",
            "yaml": "presets (pyyaml)", "rich": "the training loop's progress"}
OPTIONAL = {"pytest": "the GPU tests (part 3)",
            "pywt": "nothing here (Haar needs no PyWavelets; the tests compare against it)",
            "lpips": "the real LPIPS package: the bench uses a random-init stand-in of the same shape",
            "tensorboard": "TensorBoard logs in the GPU train tests (their tb/ check is skipped)",
            "webdataset": "the encode-dataset GPU test (skipped)",
            "cleanfid": "nothing here (rFID is not part of the check)",
            "diffusers": "the diffusers SD-VAE peer: the bench uses the registry's sd-vae-encoder (same architecture)"}
missing = []
for group, mods in (("required", REQUIRED), ("optional", OPTIONAL)):
    for mod, what in mods.items():
        try:
            m = importlib.import_module(mod)
            print(f"have {mod} {getattr(m, '__version__', '')}".rstrip())
        except Exception as e:
            line = f"{type(e).__name__}: {e}".splitlines()[0]
            if group == "required":
                missing.append(mod)
                print(f"MISSING {mod} (required for {what}): {line}")
            else:
                print(f"skip: {mod} missing ({line}): {what}")
if missing:
    print("REQUIRED MISSING: " + " ".join(missing))
EOF
cat "$OUT/dependencies.txt"
if grep -q "^REQUIRED MISSING" "$OUT/dependencies.txt"; then
    missing=$(grep '^REQUIRED MISSING' "$OUT/dependencies.txt" | cut -d: -f2-)
    echo "error:$missing not importable by $PY; carry them with make gpu-wheels (README, GPU check)" >&2
    record dependencies failed 0 "required modules missing"
    exit 2
fi
record dependencies ok 0 "$(grep -c '^skip:' "$OUT/dependencies.txt") optional missing (dependencies.txt)"

# (2) Benchmark first (the figures the window is for): SIGINT at the cap; the bench stops starting arms
# 25 s before it, and writes after every arm either way.
t=$(date +%s)
stamp "benchmark (benchmarks/speed/gpu_bench.py), cap ${BENCH_S}s"
bench_args=(--out "$OUT" --budget-s $(( BENCH_S > 60 ? BENCH_S - 25 : BENCH_S )))
if [[ "$DRY" == 1 ]]; then bench_args+=(--dry-run); fi
timeout -s INT -k 20 "$BENCH_S" "$PY" -W ignore::UserWarning benchmarks/speed/gpu_bench.py "${bench_args[@]}" \
    2>&1 | tee "$OUT/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}
stamp "benchmark exit status $bench_rc"
errors=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("errors"))' "$OUT/gpu_bench.json" 2>&1 | tail -1)
record bench "rc $bench_rc" $(( $(date +%s) - t )) "gpu_bench.md; arms in error: $errors"

# (3) GPU tests: SIGINT at the cap, so pytest still writes its summary and the JUnit file.
t=$(date +%s)
if grep -q "^skip: pytest missing" "$OUT/dependencies.txt"; then
    echo "skip: the GPU tests: pytest is not installed (carry it with make gpu-wheels)" | tee "$OUT/gpu_tests.log"
    tests_rc=skipped
else
    stamp "GPU tests (pytest -m gpu), cap ${TESTS_S}s"
    timeout -s INT -k 20 "$TESTS_S" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py \
        --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log"
    tests_rc=${PIPESTATUS[0]}
    stamp "GPU tests exit status $tests_rc"
fi
record tests "rc $tests_rc" $(( $(date +%s) - t )) "$(tail -1 "$OUT/gpu_tests.log")"

echo "gpu_check: bench rc=$bench_rc, tests rc=$tests_rc, $(( $(date +%s) - start )) s; outputs in $OUT"
[[ "$bench_rc" == 0 && ( "$tests_rc" == 0 || "$tests_rc" == skipped ) ]]
