"""Entry point of `make bench`: every issue-7 measurement, each section in its own process, then the tables.

    .venv/bin/python benchmarks/speed/run.py            # the default suite (~29 min on this 2-core machine)
    .venv/bin/python benchmarks/speed/run.py --quick    # litevae-b vs SD only, smaller grid (~5 min)
    .venv/bin/python benchmarks/speed/run.py --full     # adds M/L at batch 16, both layouts everywhere, fp32 THP pair
    .venv/bin/python benchmarks/speed/run.py --compiled # adds the issue-22 sections below (~81 min in all, cache warm)

Sections (scripts beside this one; each writes JSON into --out, and `report.py` renders them):
  dwt      DWT img/s, ours vs pywt / ptwt / the plain depthwise conv, under THP_MEM_ALLOC_ENABLE=0 and =1
  encoder  encoder img/s (batch 1 and 16, fp32 and bf16, NCHW and channels_last) + GFLOP/s vs a bf16 conv
  thp      the batch-16 litevae-b / SD pair again in a process with the other THP setting
  memory   peak RSS of one batch-16 forward, one process per (model, precision, layout, host memory reuse/system)
  decoder  smc-decoder vs sd-vae-decoder vs diffusers' decoder, under both THP settings
  train    phase-A training step, litevae-b vs sd-vae-encoder with the same smc-decoder and losses
  loader   training-loader img/s per worker at 128/256 px on synthetic JPEGs vs the decode-only limit
  host-memory  freed host memory kept for reuse (`runtime.host_memory`, what every CPU run and every section here
           uses) against the system's malloc: encoders at batch 16 and 1 and the phase-A step, one process per
           setting (host_memory_bench.py; ~7.5 min, --quick ~3 min)
Issue-22 sections, not in the default suite (an inductor compile of litevae-b takes minutes on 2 cores, and
there are ~32 of them; compiled_encoders.py alone, all 24 settings at batch 16 and 1, took 41 min with inductor's
cache warm for most settings (BENCHMARKS.md "Host memory kept for reuse"), more when cold; --prewarm fills the
cache first): add them with --compiled, or name them in --sections:
  compiled litevae-b vs SD-VAE encoders, eager/compiled x fp32/bf16 x NCHW/CL at batch 1 and 16
           (compiled_encoders.py), and the phase-A/B train step eager vs compiled (compiled_train.py)
  profile  self CPU time by op kind, litevae-b and SD-VAE, eager and compiled (op_profile.py); then the most a fused
           GroupNorm+SiLU kernel could give litevae-b against SD-VAE at batch 16, and what a real one
           (gn_silu_kernel.c, AVX-512 BF16 CPUs with a C compiler) gives (fusion_bound.py, ~4 min)
  compile-check  every full-size registered model, eval and train, under torch.compile(fullgraph=True) across
           a batch and a resolution change: graphs compiled (1 = no recompile), max difference to eager
           (compile_check.py; backend aot_eager by default here, --compile-check-backend inductor for the
           kernels too, which costs minutes per model)
--prewarm runs only the compiles of those sections (each script's --prewarm: compile, one call, no timing),
so inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR) is full when the timed run comes:
    .venv/bin/python benchmarks/speed/run.py --sections compiled profile --prewarm --out bench-results/prewarm
    .venv/bin/python benchmarks/speed/run.py --sections compiled profile --out bench-results/speed22
This script imports no torch itself: THP_MEM_ALLOC_ENABLE must be set before torch is imported, so
each child gets it in its environment. --thp (default 1) is the setting of every figure except the
thp section's and the THP=0 halves of the dwt and decoder sections.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
PEER = "sd-vae (diffusers)"
SECTIONS = ("dwt", "encoder", "thp", "memory", "decoder", "train", "loader", "host-memory")
COMPILED_SECTIONS = ("compiled", "profile", "compile-check")  # issue 22: not in the default suite (docstring)
PARTIAL = 3  # a section's exit code when some of its parts failed and it wrote the others (the issue-22 scripts)


def run_child(script: str, args: list[str], thp: int, out: Path, name: str, threads: int,
              env_extra: dict[str, str] | None = None) -> dict | None:
    out_json = out / f"{name}.json"
    cmd = [sys.executable, str(HERE / script), "--threads", str(threads), "--json", str(out_json), *args]
    env_extra = env_extra or {}
    shown = " ".join(f"{k}={v}" for k, v in {"THP_MEM_ALLOC_ENABLE": thp, **env_extra}.items())
    print(f"\n$ {shown} {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    env = dict(os.environ, THP_MEM_ALLOC_ENABLE=str(thp), **env_extra)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=HERE.parents[1])
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, PARTIAL) or not out_json.exists():
        print(f"!! section {name} failed (exit {proc.returncode})", flush=True)
        return {"section": name.split("-")[0], "failed": True, "returncode": proc.returncode, "thp": thp,
                "cmd": cmd, "wall_s": wall}
    doc = json.loads(out_json.read_text())
    doc.update(thp=thp, wall_s=wall, cmd=cmd, name=name)
    if proc.returncode == PARTIAL:
        doc["partial"] = True
        print(f"!! section {name} finished with errors (exit {PARTIAL}): its JSON and tables say which parts",
              flush=True)
    return doc


def best_layouts(encoder_doc: dict | None, batch: int) -> dict[tuple[str, str], str]:
    """(model, precision) -> the layout flagged best at `batch` in the encoder section."""
    out = {}
    for r in (encoder_doc or {}).get("rows", []):
        if r.get("batch") == batch and r.get("best_layout"):
            out[(r["model"], r["precision"])] = r["layout"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="litevae-b vs SD only, smaller grid")
    mode.add_argument("--full", action="store_true", help="everything, including M/L at batch 16")
    mode.add_argument("--smoke", action="store_true", help="plumbing check: tiny models, 1 repeat (figures meaningless)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5, help="timed repeats (>= 5)")
    p.add_argument("--thp", type=int, choices=[0, 1], default=1, help="THP_MEM_ALLOC_ENABLE of the main figures")
    p.add_argument("--sections", nargs="+", choices=SECTIONS + COMPILED_SECTIONS, default=list(SECTIONS))
    p.add_argument("--compiled", action="store_true", help="add the issue-22 sections: compiled, profile, compile-check")
    p.add_argument("--prewarm", action="store_true",
                   help="only compile (fill inductor's cache) for the compiled and profile sections; no timing")
    p.add_argument("--compile-backend", default=None, help="dynamo backend (default inductor; --smoke: eager)")
    p.add_argument("--compile-check-backend", default=None,
                   help="backend of the compile-check section (default aot_eager: graphs, guards and the backward, "
                        "no kernel builds; --smoke: eager)")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    args = p.parse_args()
    if args.smoke:
        args.reps = 1
    if args.compiled:
        args.sections = list(args.sections) + [s for s in COMPILED_SECTIONS if s not in args.sections]
    if args.prewarm:
        args.sections = [s for s in args.sections if s in COMPILED_SECTIONS and s != "compile-check"]
        if not args.sections:
            p.error("--prewarm applies to the sections compiled and profile; name one of them")
    backend = ["--backend", args.compile_backend or ("eager" if args.smoke else "inductor")]
    if args.reps < 5:
        print("note: fewer than 5 timed repeats; not a reportable run", flush=True)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    reps = ["--reps", str(args.reps)]
    t_start = time.perf_counter()
    docs: list[dict] = []

    def child(script, extra, thp, name, env_extra=None):
        doc = run_child(script, extra, thp, out, name, args.threads, env_extra)
        docs.append(doc)
        return doc

    if "dwt" in args.sections:
        for thp in (args.thp, 1 - args.thp):
            child("dwt_bench.py", ["--reps", str(max(20, args.reps)), "--warmup", "10"], thp, f"dwt-thp{thp}")

    enc = None
    if "encoder" in args.sections:
        if args.smoke:
            extra = ["--models", "litevae-tiny", "litevae-s", PEER, "--batches", "1", "2", "--warmup", "0"]
        elif args.quick:
            extra = ["--models", "litevae-b", PEER, "--both-layouts-precisions", "none"]
        elif args.full:
            extra = []
        else:  # M/L at batch 16 cost ~5 min each on 2 cores: --full only
            extra = ["--large-batch-models", "litevae-s", "litevae-b", PEER]
        enc = child("encoder_bench.py", extra + reps, args.thp, "encoder")

    best16 = best_layouts(enc, 2 if args.smoke else 16)
    if "thp" in args.sections and not args.quick and best16:
        precisions = ["fp32", "bf16"] if args.full else ["bf16"]
        models = ["litevae-s", PEER] if args.smoke else ["litevae-b", PEER]
        fixed = [f"{m}:{pr}:{best16.get((m, pr), 'CL')}" for m in models for pr in precisions]
        child("encoder_bench.py", ["--models", *models, "--batches", "2" if args.smoke else "16",
                                   "--precisions", *precisions,
                                   "--fixed", *fixed] + reps, 1 - args.thp, f"thp-encoder-thp{1 - args.thp}")

    if "memory" in args.sections:
        models = ["litevae-s", "litevae-b", "litevae-m", "litevae-l", PEER] if args.full else ["litevae-b", PEER]
        models = ["litevae-s", PEER] if args.smoke else models
        precisions = ["bf16"] if args.quick or args.smoke else ["fp32", "bf16"]
        # Both host-memory settings: freed memory kept for reuse (what CPU runs do) costs peak RSS, and the
        # system's malloc shows the activations' own footprint (runtime.host_memory).
        for host_memory in ("reuse", "system"):
            for m in models:
                for pr in precisions:
                    layout = best16.get((m, pr), "CL")
                    child("memory_bench.py", ["--model", m, "--precision", pr, "--layout", layout]
                          + (["--batch", "2"] if args.smoke else []), args.thp,
                          f"memory-{m.split()[0]}-{pr}-{layout}-{host_memory}", {"LITEVAE_HOST_MEMORY": host_memory})

    if "decoder" in args.sections:
        extra = ["--precisions", "bf16"] if (args.quick or args.smoke) else (["--layouts", "NCHW", "CL"] if args.full else [])
        extra += ["--warmup", "0"] if args.smoke else ["--warmup", "2"]
        child("decoder_bench.py", extra + reps, args.thp, "decoder")
        if not (args.quick or args.smoke):  # the SMC / GroupNorm ratio moves with the allocator setting
            child("decoder_bench.py", extra + reps, 1 - args.thp, f"decoder-thp{1 - args.thp}")

    if "train" in args.sections:
        child("train_bench.py", ["--batch", "1" if args.smoke else "2" if args.quick else "4"] + reps, args.thp, "train")

    if "loader" in args.sections:
        extra = (["--images", "24", "--batches", "1", "--sizes", "128"] if args.smoke
                 else ["--quick"] if args.quick else [])
        child("loader_bench.py", extra + reps, args.thp, "loader")

    if "host-memory" in args.sections:
        extra = (["--quick", "--rounds", "1", "--reps", "1"] if args.smoke
                 else ["--workloads", "litevae-b b16", "sd-vae b16", "--rounds", "1"] if args.quick else [])
        child("host_memory_bench.py", extra, args.thp, "host-memory")

    prewarm = ["--prewarm"] if args.prewarm else []
    tiny = ["--quick", "--warmup", "0"] if args.smoke else []
    if "compiled" in args.sections:
        extra = ["--batches", "1"] if args.smoke else ["--settings", "bf16"] if args.quick else []
        child("compiled_encoders.py", tiny + extra + backend + prewarm + reps, args.thp, "compiled-encoders")
        extra = (["--phases", "B", "--batch-b", "1", "--lpips", "off"] if args.smoke
                 else ["--phases", "A"] if args.quick else [])
        child("compiled_train.py", tiny + extra + backend + prewarm + reps, args.thp, "compiled-train")

    if "profile" in args.sections:
        child("op_profile.py", tiny + backend + prewarm + reps, args.thp, "op-profile")
        if not args.prewarm:  # eager probes: nothing to compile
            extra = ["--quick", "--batch", "1", "--warmup", "0"] if args.smoke else []
            child("fusion_bound.py", extra + reps, args.thp, "fusion-bound")

    if "compile-check" in args.sections:
        check_backend = args.compile_check_backend or ("eager" if args.smoke else "aot_eager")
        extra = ["--quick", "--models", "litevae-tiny"] if args.smoke else []
        child("compile_check.py", extra + ["--backend", check_backend, "--reps", "1" if args.smoke else "3"],
              args.thp, "compile-check")

    from report import render

    total = time.perf_counter() - t_start
    command = " ".join([".venv/bin/python benchmarks/speed/run.py", *sys.argv[1:]])
    md = render(docs, command=command, total_s=total, main_thp=args.thp)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"docs": docs, "total_s": total, "command": command},
                                                 indent=1, default=str))
    print("\n" + md)
    print(f"results: {out / 'results.md'} ({total / 60:.1f} min)")
    if any(d.get("failed") or d.get("partial") for d in docs):
        sys.exit(1)


if __name__ == "__main__":
    main()
