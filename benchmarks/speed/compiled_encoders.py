"""Encoders eager vs compiled, side by side (issue 22 item 5): litevae-b against diffusers' SD-VAE encoder at
256 px, each model in every setting {eager, compiled} x {fp32, bf16 autocast} x {NCHW, channels_last}.

- encode = what `encoder_bench.py` times: LiteVAE's encoder (nz 4) and the peer's encoder + quant conv (SD 1.x
  config, random init). Both run through `Moments` (the posterior's moments tensor, so eager and compiled arms
  do the same work and the compiled graph returns a plain tensor).
- compiled = `torch.compile(Moments(copy), backend=--backend, dynamic=False)`: one compiled copy per (model,
  precision, layout, batch), its GroupNorms routed as `--compile` routes them on this device
  (`runtime.compiled_models.group_norm_choice`: ATen's kernel on CPU); compiled-inductor-gn = the same without
  the routing (inductor decomposes and fuses GroupNorm itself). Its first call (dynamo capture + inductor build,
  or a load from inductor's on-disk FX graph cache) is reported apart as `compile_s`; img/s is the steady state
  after --warmup more calls.
- All settings of one batch size are timed interleaved in one process (`harness.time_interleaved`). Per batch:
  every setting's img/s, each model's best setting, litevae-b best / SD-VAE best (pair by pair), and litevae-b
  compiled / eager at the precision `runtime.resolve_precision("auto", cpu)` picks on this CPU (best layout of
  each), against the issue's goals (>= 3.5x at batch 16, >= 3.0x at batch 1, compiled >= 1.5x eager).

--prewarm compiles and runs each compiled setting once, without timing: run it first (e.g. while something else
holds the machine) and the real run's compiles load from the cache (TORCHINDUCTOR_CACHE_DIR, default
/tmp/torchinductor_$USER; keep the same torch, flags and settings). --quick: litevae-tiny against a 2-level
diffusers AutoencoderKL at 32 px, batches 1 and 2 (plumbing; with --backend eager it traces only).

    python benchmarks/speed/compiled_encoders.py --batches 1 16 --json out.json
    python benchmarks/speed/compiled_encoders.py --prewarm          # fill the inductor cache only
"""

from __future__ import annotations

import copy
import re
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # encoder_bench.py
from harness import (autocast, base_parser, images, log, machine_info, memory_format, pair_ratio, peer_available,
                     setup_threads, stats, time_interleaved, write_json)
from encoder_bench import NZ, PEER, build_models

from litevae_cli.runtime.compiled_models import group_norm_choice, route_for

LITE = "litevae-b"
# compiled = what `--compile` does here (runtime.compiled_models: on CPU each GroupNorm stays ATen's kernel);
# compiled-inductor-gn = inductor's own GroupNorm kernels (before that routing: the comparison item 4 asks for).
MODES, PRECISIONS, LAYOUTS = ("eager", "compiled", "compiled-inductor-gn"), ("fp32", "bf16"), ("NCHW", "CL")
PARTIAL = 3  # exit code when some settings failed (recorded under "errors") and the others were written
GOALS = {"ratio_vs_peer": {1: 3.0, 16: 3.5}, "compiled_over_eager": 1.5}  # issue 22 item 5
QUICK_PEER = dict(in_channels=3, out_channels=3, latent_channels=NZ, block_out_channels=(32, 64),
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=1, norm_num_groups=8, act_fn="silu")


class Moments(torch.nn.Module):
    """The posterior moments [N, 2*nz, h, w] of an encoder: LiteVAE's forward, or the peer's encoder + quant conv."""

    def __init__(self, model: torch.nn.Module, peer: bool):
        super().__init__()
        self.model, self.peer = model, peer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.peer:
            return self.model.quant_conv(self.model.encoder(x))
        return self.model(x).moments


def build(quick: bool) -> dict[str, torch.nn.Module]:
    """{litevae name: model, PEER: diffusers AutoencoderKL without its decoder}, random init, eval mode."""
    if not quick:
        return build_models([LITE, PEER])
    from diffusers import AutoencoderKL

    from litevae_cli import create_model

    torch.manual_seed(0)
    lite = create_model("litevae-tiny", nz=NZ).eval()
    peer = AutoencoderKL(**QUICK_PEER).eval()
    peer.decoder = None
    return {"litevae-tiny": lite, PEER: peer}


def setting_keys(models, settings_filter: list[str] | None) -> list[str]:
    """"model|mode|precision|layout" for every setting, kept when every token of some filter matches
    (a filter is '|'- or space-separated tokens, e.g. 'compiled|bf16')."""
    keys = [f"{m}|{mode}|{p}|{lay}" for m in models for mode in MODES for p in PRECISIONS for lay in LAYOUTS]
    if not settings_filter:
        return keys

    def matches(key: str, tokens: list[str]) -> bool:  # a token is a mode, precision, layout or model-name prefix
        name, *rest = key.split("|")
        return all(t in rest or name.startswith(t) for t in tokens)
    filters = [[t for t in f.replace("|", " ").split() if t] for f in settings_filter]
    return [k for k in keys if any(matches(k, f) for f in filters)]


def own_frame(module: torch.nn.Module, tag: str):
    """`module`'s call as a function with its own code object: dynamo keeps its compiled graphs per code object,
    so each compiled setting has its own cache entry (no setting counts against another's recompile limit)."""
    def call(x):
        return module(x)
    code = call.__code__.replace(co_name=f"encode_{tag}")
    return types.FunctionType(code, call.__globals__, code.co_name, None, call.__closure__)


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


def callables(models, keys, batch: int, res: int, backend: str, errors: dict) -> tuple[dict, dict]:
    """({key: zero-arg callable}, {key: compile seconds}); a compiled setting is built and called once here. A
    setting whose compile or first call fails is left out and its error recorded in `errors` (the others run)."""
    fns, compile_s = {}, {}
    for key in keys:
        name, mode, precision, layout = key.split("|")
        m = Moments(copy.deepcopy(models[name]).to(memory_format=memory_format(layout)), name == PEER).eval()
        x = images(batch, res, layout)
        if mode.startswith("compiled"):
            t0 = time.perf_counter()
            try:
                if mode == "compiled":
                    route_for(torch.device("cpu"), m)
                tag = re.sub(r"\W+", "_", f"{name.split()[0]}_{mode}_{precision}_{layout}_b{batch}")  # as --prewarm
                m = torch.compile(own_frame(m, tag), backend=backend, dynamic=False)
                with torch.inference_mode(), autocast(precision):
                    m(x)
            except Exception as e:  # noqa: BLE001 - recorded and reported; the other settings still run
                errors[f"{key}|b{batch}"] = error_text(e)
                log(f"  !! {key} at batch {batch}: {errors[f'{key}|b{batch}']}")
                continue
            compile_s[key] = round(time.perf_counter() - t0, 2)
            log(f"  compiled {key} at batch {batch}: first call {compile_s[key]:.1f} s")

        def fn(m=m, x=x, precision=precision):
            with autocast(precision):
                return m(x)
        fns[key] = fn
    return fns, compile_s


def best_of(rates: dict, model: str, **fixed) -> str | None:
    """The key of `model`'s fastest setting (by median) among those matching `fixed` (mode/precision/layout)."""
    best = None
    for key, vals in rates.items():
        name, mode, precision, layout = key.split("|")
        got = {"mode": mode, "precision": precision, "layout": layout}
        if name != model or any(got[k] != v for k, v in fixed.items()):
            continue
        if best is None or stats(vals)["median"] > stats(rates[best])["median"]:
            best = key
    return best


def goal(value: float, target: float | None) -> dict | None:
    if target is None:
        return None
    return {"target": target, "met": value >= target, "shortfall_pct": round(max(0.0, 1 - value / target) * 100, 1)}


def summarise(rates: dict, compile_s: dict, batch: int, lite: str, auto_precision: str) -> dict:
    rows = [{"setting": k, "model": k.split("|")[0], "mode": k.split("|")[1], "precision": k.split("|")[2],
             "layout": k.split("|")[3], "img_s": stats(v), "compile_s": compile_s.get(k)} for k, v in rates.items()]
    out = {"batch": batch, "rows": rows, "best": {m: best_of(rates, m) for m in {r["model"] for r in rows}}}
    lb, pb = out["best"].get(lite), out["best"].get(PEER)
    if lb and pb:
        r = pair_ratio(rates[lb], rates[pb])
        out["ratio_vs_peer"] = {"litevae": lb, "peer": pb, "ratio": r,
                                "goal": goal(r["median"], GOALS["ratio_vs_peer"].get(batch))}
    out["compiled_over_eager"] = {}
    for mode in MODES[1:]:
        for m in (lite, PEER):
            c, e = best_of(rates, m, mode=mode, precision=auto_precision), \
                best_of(rates, m, mode="eager", precision=auto_precision)
            if c and e:
                r = pair_ratio(rates[c], rates[e])
                out["compiled_over_eager"][f"{m}|{mode}"] = {
                    "model": m, "mode": mode, "precision": auto_precision, "compiled": c, "eager": e, "ratio": r,
                    "goal": goal(r["median"], GOALS["compiled_over_eager"]) if m == lite and mode == "compiled"
                    else None}
    return out


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batches", nargs="+", type=int, default=None, help="default 1 16 (--quick: 1 2)")
    p.add_argument("--settings", nargs="+", default=None, metavar="FILTER",
                   help="keep settings matching a filter of tokens, e.g. 'compiled|bf16' 'sd-vae eager' (default all)")
    p.add_argument("--backend", default="inductor", help="dynamo backend (eager / aot_eager trace only: tests)")
    p.add_argument("--prewarm", action="store_true", help="compile and run each compiled setting once; no timing")
    args = p.parse_args()
    setup_threads(args.threads)
    if why := peer_available():
        raise SystemExit(why)
    batches = args.batches or ([1, 2] if args.quick else [1, 16])
    res = 32 if args.quick else 256
    from litevae_cli.runtime import resolve_precision

    auto_precision, auto_reason = resolve_precision("auto", torch.device("cpu"))
    models = build(args.quick)
    lite = next(m for m in models if m != PEER)
    keys = setting_keys(models, args.settings)
    if not keys:
        raise SystemExit(f"--settings {args.settings} matches no setting")
    results, errors = [], {}

    def write():
        write_json(args.json, {"section": "compiled_encoders", "prewarm": args.prewarm, "resolution": res, "nz": NZ,
                               "litevae": lite, "peer": PEER, "backend": args.backend, "settings": keys,
                               "auto": {"precision": auto_precision, "reason": auto_reason},
                               "group_norm": dict(zip(("kernels", "why"), group_norm_choice(torch.device("cpu")))),
                               "goals": {
                                   "ratio_vs_peer": {str(k): v for k, v in GOALS["ratio_vs_peer"].items()},
                                   "compiled_over_eager": GOALS["compiled_over_eager"]},
                               "machine": machine_info(args.threads), "batches": results, "errors": errors,
                               "args": {k: (str(v) if k == "json" else v) for k, v in vars(args).items()}})
    for batch in batches:
        torch._dynamo.reset()  # each batch's compiled copies start from empty dynamo caches
        todo = [k for k in keys if k.split("|")[1].startswith("compiled")] if args.prewarm else keys
        log(f"batch {batch}, {res} px: {len(todo)} settings, backend {args.backend}"
            + (" (prewarm: compile only)" if args.prewarm else ""))
        t0 = time.perf_counter()
        with torch.inference_mode():
            fns, compile_s = callables(models, todo, batch, res, args.backend, errors)
            if args.prewarm:
                results.append({"batch": batch, "compile_s": compile_s, "wall_s": time.perf_counter() - t0})
                write()
                continue
            warmup = max(args.warmup, 3) if batch == 1 else args.warmup
            rates = time_interleaved(fns, args.reps, warmup, float(batch))
        summary = summarise(rates, compile_s, batch, lite, auto_precision)
        summary["wall_s"] = round(time.perf_counter() - t0, 1)
        for r in summary["rows"]:
            log(f"  {r['setting']:>40}: {r['img_s']['median']:.2f} img/s" + (f" (compile {r['compile_s']} s)"
                                                                           if r["compile_s"] is not None else ""))
        if "ratio_vs_peer" in summary:
            log(f"  best {lite} / best SD-VAE: {summary['ratio_vs_peer']['ratio']['median']:.2f}x")
        results.append(summary)
        write()  # after every batch: what ran is kept if a later batch fails
    if errors:
        raise SystemExit(PARTIAL)


if __name__ == "__main__":
    main()
