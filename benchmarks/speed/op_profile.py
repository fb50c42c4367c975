"""Per-op-kind CPU profile of the encoders (issue 22 item 4): where litevae-b's and SD-VAE's encode time goes,
eager and compiled, grouped by `op_kinds.classify` (convolution / norm / activation / matmul / elementwise /
memory / fused inductor kernels by the kinds they fuse / other).

Per (model, mode): torch.profiler (CPU activity) over --reps forwards after the compile and --warmup calls; each
op's SELF CPU time (time in the op itself, not in the ops it calls) per forward, summed per kind: the kinds add
up to the profiled total. The encode is `compiled_encoders.Moments` (LiteVAE's encoder; the peer's encoder +
quant conv), default batch 8 at 256 px, bf16 autocast, channels_last (the issue's setting). Compiled = inductor
with `config.cpp.enable_kernel_profile`, so its C++ kernels show up by name (`graph_<n>_cpp_fused_<ops>_<i>`);
without it their time would sit in the compiled region's self time. Profiler overhead inflates many small ops:
compare kinds and models in this table, take speed from `compiled_encoders.py`.

    python benchmarks/speed/op_profile.py --json out.json          # litevae-b and SD-VAE, eager and compiled
    python benchmarks/speed/op_profile.py --prewarm                # fill the inductor cache only
    python benchmarks/speed/op_profile.py --quick --backend eager  # tiny models at 32 px (plumbing)
"""

from __future__ import annotations

import copy
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import autocast, base_parser, images, log, machine_info, memory_format, peer_available, setup_threads, \
    write_json
from compiled_encoders import MODES, PARTIAL, Moments, build, error_text, own_frame
from compiled_report import profile_tables
from encoder_bench import PEER
from op_kinds import classify, kind_order

from litevae_cli.runtime.compiled_models import route_for

TOP = 10


def encoder(models: dict, name: str, mode: str, layout: str, backend: str):
    m = Moments(copy.deepcopy(models[name]).to(memory_format=memory_format(layout)), name == PEER).eval()
    if mode.startswith("compiled"):
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # name each C++ kernel in the profile (module docstring)
        if mode == "compiled":
            route_for(torch.device("cpu"), m)  # what --compile does on CPU (compiled_encoders.MODES)
        tag = f"{name.split()[0]}_{mode}_{layout}".replace("-", "_")
        return torch.compile(own_frame(m, tag), backend=backend, dynamic=False)
    return m


def kinds_of(events, iters: int) -> dict:
    """{total_ms, kinds: {kind: {ms, pct}}, top: [...]} per forward, from profiler key averages."""
    per_kind: dict[str, float] = defaultdict(float)
    ops = []
    for e in events:
        us = float(e.self_cpu_time_total)
        kind = classify(e.key)
        per_kind[kind] += us
        ops.append({"op": e.key, "kind": kind, "ms": us / iters / 1e3, "calls": e.count / iters})
    total_ms = sum(per_kind.values()) / iters / 1e3
    order = sorted(per_kind, key=kind_order)
    kinds = {k: {"ms": per_kind[k] / iters / 1e3, "pct": 100 * per_kind[k] / iters / 1e3 / total_ms if total_ms else 0}
             for k in order}
    top = sorted(ops, key=lambda o: -o["ms"])[:TOP]
    for o in top:
        o["pct"] = 100 * o["ms"] / total_ms if total_ms else 0
    return {"total_ms": total_ms, "kinds": kinds, "top": top}


def profile_one(models, name, mode, args) -> dict:
    torch._dynamo.reset()
    fn = encoder(models, name, mode, args.layout, args.backend)
    x = images(args.batch, args.resolution, args.layout)

    def call():
        with autocast(args.precision):
            return fn(x)
    with torch.inference_mode():
        t0 = time.perf_counter()
        call()
        first_s = time.perf_counter() - t0
        row = {"model": name, "mode": mode, "first_call_s": round(first_s, 2)}
        if args.prewarm:
            return row
        for _ in range(args.warmup):
            call()
        t0 = time.perf_counter()
        for _ in range(args.reps):
            call()
        row["wall_ms_unprofiled"] = (time.perf_counter() - t0) / args.reps * 1e3
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(args.reps):
                call()
            row["wall_ms_profiled"] = (time.perf_counter() - t0) / args.reps * 1e3
    row.update(kinds_of(prof.key_averages(), args.reps))
    log(f"{name} {mode}: {row['total_ms']:.1f} ms self CPU per forward; "
        + ", ".join(f"{k} {v['pct']:.0f}%" for k, v in row["kinds"].items()))
    return row


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(reps=5, warmup=2)
    p.add_argument("--batch", type=int, default=None, help="default 8 (--quick: 2)")
    p.add_argument("--resolution", type=int, default=None, help="default 256 (--quick: 32)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--layout", choices=("NCHW", "CL"), default="CL")
    p.add_argument("--modes", nargs="+", choices=MODES, default=["eager", "compiled-inductor-gn", "compiled"],
                   help="compiled = as --compile (GroupNorm routed to ATen on CPU); "
                        "compiled-inductor-gn = inductor's own GroupNorm")
    p.add_argument("--backend", default="inductor", help="dynamo backend of the compiled mode (eager: tests)")
    p.add_argument("--models", nargs="+", default=None, metavar="PREFIX",
                   help="profile only the models whose names start with these (default: litevae-b and SD-VAE)")
    p.add_argument("--prewarm", action="store_true", help="compile and run each compiled encoder once; no profile")
    args = p.parse_args()
    setup_threads(args.threads)
    if why := peer_available():
        raise SystemExit(why)
    args.batch = args.batch or (2 if args.quick else 8)
    args.resolution = args.resolution or (32 if args.quick else 256)
    models = build(args.quick)
    if args.models:
        models = {k: v for k, v in models.items() if any(k.startswith(m) for m in args.models)}
        if not models:
            raise SystemExit(f"--models {args.models}: no such model here")
    modes = [m for m in args.modes if m != "eager"] if args.prewarm else args.modes
    rows, errors = [], {}
    for name in models:
        for mode in modes:
            try:
                rows.append(profile_one(models, name, mode, args))
            except Exception as e:  # noqa: BLE001 - recorded and reported; the other rows still run
                errors[f"{name}|{mode}"] = error_text(e)
                log(f"!! {name} {mode}: {errors[f'{name}|{mode}']}")
    doc = {"section": "op_profile", "prewarm": args.prewarm, "batch": args.batch, "resolution": args.resolution,
           "precision": args.precision, "layout": args.layout, "backend": args.backend, "reps": args.reps,
           "machine": machine_info(args.threads), "rows": rows, "errors": errors,
           "args": {k: (str(v) if k == "json" else v) for k, v in vars(args).items()}}
    if not args.prewarm:
        print("\n".join(profile_tables(doc)))
    write_json(args.json, doc)
    if errors:
        raise SystemExit(PARTIAL)


if __name__ == "__main__":
    main()
