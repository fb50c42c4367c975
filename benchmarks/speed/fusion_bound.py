"""How far could a fused GroupNorm+SiLU kernel take litevae-b against SD-VAE on this CPU? (issue 22 items 4-5)

Neither ATen nor inductor has a CPU kernel that fuses GroupNorm with the SiLU after it, and the issue allows a
hand-written one only with a measured reason. This script measures the most any such kernel could give, by
timing litevae-b with the work removed that a perfect fusion would hide:

- `stock`:        litevae-b as registered (ATen GroupNorm, then SiLU in place: `models.layers.silu_`);
- `no-silu`:      every SiLU replaced by the identity: a fused kernel whose activation costs nothing beyond
                  GroupNorm's own passes (the best a fusion can do: it still reads the input for the statistics
                  and reads and writes it once to normalise);
- `no-groupnorm`: every GroupNorm replaced by the identity (SiLU alone is left);
- `neither`:      both removed: no kernel at all, the bound on any norm/activation work;
- `fused-kernel`: a real hand-written fused kernel (gn_silu_kernel.c, AVX-512 BF16, bf16 channels_last only),
                  each GroupNorm+SiLU pair as one call; measured where it builds, else the run says why not.

The first four variants are not models (their outputs are meaningless); they are cost probes. `fused-kernel` is a
model: its moments are compared with the stock model's, both against an fp32 forward (`accuracy` in the JSON).
Where it runs, SD-VAE is also timed with the same kernel (`PEER_KERNEL`), for the ratio with both models fused.
Each is timed interleaved with diffusers' SD-VAE encoder (+ quant conv) in the same process, eager, bf16 autocast,
channels_last (both models' best eager setting on this CPU; compiled runs within 1-2% of eager here,
BENCHMARKS.md "Host memory kept for reuse"), and the ratio to SD-VAE is taken repeat by repeat. The goals are the
issue's 3.5x at batch 16 and 3.0x at batch 1.

    python benchmarks/speed/fusion_bound.py --batch 16 --reps 5 --json out.json
    python benchmarks/speed/fusion_bound.py --quick      # litevae-tiny vs a 2-level AutoencoderKL, 32 px
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import autocast, base_parser, images, log, pair_ratio, setup_threads, stats, time_interleaved, write_json
from compiled_encoders import PEER, Moments, build

import gn_silu_kernel

VARIANTS = ("stock", "no-silu", "no-groupnorm", "neither")
KERNEL = "fused-kernel"  # measured after VARIANTS where `kernel_unavailable` is None
PEER_KERNEL = f"{PEER} + {KERNEL}"  # the peer with the same kernel: the ratio when both are fused
PEER_UNFUSED = ("group_norm",)  # diffusers' Attention.group_norm: no SiLU follows it, so it keeps ATen's norm
GOALS = {1: 3.0, 16: 3.5}  # issue 22 item 5: litevae-b / SD-VAE at batch 1 and batch 16


def goal_for(batch: int) -> float:
    """The issue's goal at this batch (batch 1's below 16, batch 16's from 16 up)."""
    return GOALS[1] if batch < 16 else GOALS[16]


def without_group_norms(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with every nn.GroupNorm replaced by nn.Identity."""
    return gn_silu_kernel.swap_group_norms(model, lambda norm: torch.nn.Identity())


@contextlib.contextmanager
def silu_as_identity():
    """F.silu returns its input while active (models.layers and nn.SiLU both look it up at call time)."""
    real = F.silu
    F.silu = lambda x, inplace=False: x
    try:
        yield
    finally:
        F.silu = real


def kernel_unavailable(precision: str, layout: str) -> str | None:
    """Why the fused-kernel row is not measured (None: it is)."""
    if (precision, layout) != ("bf16", "CL"):
        return f"the kernel covers bf16 channels_last only, not {precision} {layout}"
    return gn_silu_kernel.unavailable()


def variant_callables(lite: torch.nn.Module, peer: torch.nn.Module, batch: int, res: int, precision: str,
                      layout: str, kernel: bool = False) -> dict:
    """{variant or PEER: zero-arg callable}: the litevae probes (and the fused kernel where `kernel`) and the
    peer, same input layout."""
    fmt = torch.channels_last if layout == "CL" else torch.contiguous_format
    x = images(batch, res, layout)
    mods = {"stock": lite, "no-silu": lite, "no-groupnorm": without_group_norms(lite),
            "neither": without_group_norms(lite)}
    if kernel:
        mods[KERNEL] = gn_silu_kernel.fused_copy(lite)
    mods = {k: Moments(m, peer=False).to(memory_format=fmt).eval() for k, m in mods.items()}
    peer_m = Moments(peer, peer=True).to(memory_format=fmt).eval()

    def call(m, no_silu):
        def fn():
            with torch.inference_mode(), autocast(precision), (silu_as_identity() if no_silu else
                                                                contextlib.nullcontext()):
                return m(x)
        return fn
    fns = {k: call(m, k in ("no-silu", "neither", KERNEL)) for k, m in mods.items()}
    fns[PEER] = call(peer_m, False)
    if kernel:  # the same kernel in the peer, for the ratio with both fused (diffusers' attention norm is skipped)
        peer_fused = Moments(gn_silu_kernel.fused_copy(peer, skip=PEER_UNFUSED), peer=True).to(memory_format=fmt)
        fns[PEER_KERNEL] = call(peer_fused.eval(), True)
    return fns


def kernel_accuracy(fns: dict, model: torch.nn.Module, batch: int, res: int, layout: str, peer: bool = False) -> dict:
    """Relative L2 distance of the stock and fused-kernel bf16 moments to an fp32 forward of the same model and
    input, and between the two: the kernel's row is a model only if it is no further from fp32 than stock."""
    fmt = torch.channels_last if layout == "CL" else torch.contiguous_format
    with torch.inference_mode():
        ref = Moments(model, peer=peer).to(memory_format=fmt).eval()(images(batch, res, layout)).float()
    stock_fn, fused_fn = (fns[PEER], fns[PEER_KERNEL]) if peer else (fns["stock"], fns[KERNEL])
    before = dict(gn_silu_kernel.calls)
    stock, fused = stock_fn().float(), fused_fn().float()
    per_forward = {k: v - before[k] for k, v in gn_silu_kernel.calls.items()}

    def rel(a, b):
        return round(((a - b).norm() / b.norm()).item(), 5)
    return {"stock_vs_fp32": rel(stock, ref), "kernel_vs_fp32": rel(fused, ref), "kernel_vs_stock": rel(fused, stock),
            "calls_per_forward": per_forward}


def accuracy_line(doc: dict) -> str:
    lines = ["", ""]
    for name, key in ((f"{doc['model']} {KERNEL}", "accuracy"), (PEER_KERNEL, "peer_accuracy")):
        a = doc[key]
        c = a["calls_per_forward"]
        lines.append(f"- {name}: moments at relative L2 {a['kernel_vs_fp32']} from an fp32 forward (stock bf16: "
                     f"{a['stock_vs_fp32']}; kernel vs stock {a['kernel_vs_stock']}); GroupNorm calls through the "
                     f"kernel / through ATen, per forward: {c['fused']} / {c['aten']}.")
    b = doc["both_fused"]
    lines.append(f"- With the kernel in both models, {doc['model']} / SD-VAE = {b['median']:.2f}x "
                 f"({b['min']:.2f}-{b['max']:.2f}); the kernel alone speeds SD-VAE up "
                 f"{doc['peer_kernel_speedup']['median']:.3f}x.")
    return "\n".join(lines)


def summarise(rates: dict, lite_name: str, goal: float) -> dict:
    out = {"img_s": {k: stats(v) for k, v in rates.items()}, "rows": []}
    stock = out["img_s"]["stock"]["median"]
    for v in [k for k in (*VARIANTS, KERNEL) if k in rates]:
        ratio = pair_ratio(rates[v], rates[PEER])
        out["rows"].append({"variant": v, "img_s": out["img_s"][v]["median"],
                            "time_removed": round(1 - stock / out["img_s"][v]["median"], 4),
                            "ratio_vs_peer": ratio, "meets_goal": ratio["median"] >= goal})
    out["model"], out["goal"] = lite_name, goal
    if PEER_KERNEL in rates:
        out["both_fused"] = pair_ratio(rates[KERNEL], rates[PEER_KERNEL])
        out["peer_kernel_speedup"] = pair_ratio(rates[PEER_KERNEL], rates[PEER])
    return out


def table(doc: dict) -> str:
    lines = [f"| {doc['model']} variant | img/s | share of stock time removed | / SD-VAE (pair by pair) | >= {doc['goal']}x |",
             "|---|---|---|---|---|"]
    for r in doc["rows"]:
        q = r["ratio_vs_peer"]
        lines.append(f"| {r['variant']} | {r['img_s']:.3f} | {100 * r['time_removed']:.1f}% | "
                     f"{q['median']:.2f}x ({q['min']:.2f}-{q['max']:.2f}) | {'yes' if r['meets_goal'] else 'no'} |")
    lines.append(f"| {PEER} | {doc['img_s'][PEER]['median']:.3f} | - | 1 | - |")
    if PEER_KERNEL in doc["img_s"]:
        lines.append(f"| {PEER_KERNEL} | {doc['img_s'][PEER_KERNEL]['median']:.3f} | - | - | - |")
    return "\n".join(lines)


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--layout", choices=["NCHW", "CL"], default="CL")
    p.add_argument("--no-kernel", action="store_true", help="skip the fused-kernel row (probes only)")
    args = p.parse_args()
    setup_threads(args.threads)
    models = build(args.quick)
    lite_name = next(k for k in models if k != PEER)
    res = 32 if args.quick else 256
    why_not = "--no-kernel" if args.no_kernel else kernel_unavailable(args.precision, args.layout)
    fns = variant_callables(models[lite_name], models[PEER], args.batch, res, args.precision, args.layout,
                            kernel=why_not is None)
    accuracy = peer_accuracy = None
    if why_not is None:
        accuracy = kernel_accuracy(fns, models[lite_name], args.batch, res, args.layout)
        peer_accuracy = kernel_accuracy(fns, models[PEER], args.batch, res, args.layout, peer=True)
    log(f"fusion bound: {lite_name} probes vs {PEER}, batch {args.batch}, {res} px, {args.precision} {args.layout} "
        f"({args.warmup} warm-up + {args.reps} timed, interleaved)")
    rates = time_interleaved(fns, args.reps, args.warmup, items=float(args.batch))
    doc = summarise(rates, lite_name, goal_for(args.batch))
    doc.update(section="fusion_bound", batch=args.batch, resolution=res, precision=args.precision, layout=args.layout,
               kernel_unavailable=why_not, accuracy=accuracy, peer_accuracy=peer_accuracy)
    doc["table"] = table(doc) + (f"\n\n{KERNEL} not measured: {why_not}." if why_not else accuracy_line(doc))
    print(doc["table"], flush=True)
    write_json(args.json, doc)


if __name__ == "__main__":
    main()
