"""Encoder throughput (issue 7 items 1-2): LiteVAE S/B/M/L against the SD 1.x VAE encoder, and the
achieved GFLOP/s of litevae-b against a plain bf16 channels_last 3x3 conv on the same machine.

A contender is (model, layout): its own copy of the weights in NCHW or channels_last ("CL") and its own
input in that layout. For one batch size and precision every contender runs in one interleaved loop
(A, B, C, ... per repeat), so "each precision at its best" (the faster layout of each model, chosen by
median) can be compared pair by pair with the peer in its best layout.

- Peer: diffusers `AutoencoderKL` (SD 1.x config, random init), `.encode(x)` = encoder + quant conv,
  latent_channels 4. LiteVAE encoders are built with nz=4 to match (`create_model(name, nz=4)`).
- bf16 = torch.autocast(cpu, bfloat16) with float32 weights; the LiteVAE DWT runs in float32 inside it.
- FLOPs (FLOP = 2 x MAC) from `litevae_cli.models.complexity.model_complexity` at 256 px; the peer uses
  our `sd-vae-encoder` count (same architecture).
- Everything runs under torch.inference_mode().

    .venv/bin/python benchmarks/speed/encoder_bench.py --batches 1 16 --json out.json
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import (autocast, base_parser, diffusers_sd_vae, images, log, memory_format, pair_ratio, peer_available,
                     setup_threads, stats, time_interleaved, write_json)

PEER = "sd-vae (diffusers)"
RES = 256
NZ = 4  # latent_channels of the SD 1.x AutoencoderKL
CEILING = "conv3x3 64->64 @128 b16 bf16 CL"


def build_models(names: list[str]) -> dict[str, torch.nn.Module]:
    """name -> module, random init (seed 0), eval mode."""
    from litevae_cli import create_model

    out = {}
    for name in names:
        torch.manual_seed(0)
        if name == PEER:
            vae = diffusers_sd_vae()
            vae.decoder = None  # encoder-only peer: the decoder is item 5's business
            out[name] = vae
        else:
            out[name] = create_model(name, nz=NZ).eval()
    return out


def encode_fn(name: str, m: torch.nn.Module):
    """The posterior of x: LiteVAE returns it from forward; the peer's `.encode` runs encoder + quant conv."""
    return (lambda x: m.encode(x).latent_dist) if name == PEER else (lambda x: m(x))


def flops_per_image(name: str) -> float:
    from litevae_cli.models.complexity import model_complexity

    return model_complexity("sd-vae-encoder" if name == PEER else name, RES, nz=NZ)[f"gflops_{RES}"] * 1e9


def contenders(models: dict, plan: dict[str, list[str]], batch: int) -> dict[str, callable]:
    """plan: model -> layouts. Returns {"model|layout": zero-arg callable}: its own weight copy and input."""
    fns = {}
    for name, layouts in plan.items():
        for layout in layouts:
            m = copy.deepcopy(models[name]).to(memory_format=memory_format(layout))
            fns[f"{name}|{layout}"] = (lambda f=encode_fn(name, m), x=images(batch, RES, layout): f(x))
    return fns


def ceiling_conv() -> tuple[callable, float]:
    """A plain bf16 channels_last 3x3 conv, 64->64 channels at 128x128, batch 16: (callable, FLOP per call)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, 128, 128, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    b = torch.zeros(64, dtype=torch.bfloat16)
    return (lambda: F.conv2d(x, w, b, padding=1)), 2.0 * 16 * 64 * 64 * 9 * 128 * 128


def best_layouts(rates: dict[str, list[float]]) -> dict[str, str]:
    """model -> the layout with the higher median rate."""
    best: dict[str, tuple[float, str]] = {}
    for key, vals in rates.items():
        name, layout = key.split("|")
        med = stats(vals)["median"]
        if name not in best or med > best[name][0]:
            best[name] = (med, layout)
    return {k: v[1] for k, v in best.items()}


def run_loop(models, plan, batch, precision, reps, warmup, with_ceiling=False) -> dict:
    fns = contenders(models, plan, batch)
    items = {k: float(batch) for k in fns}
    if with_ceiling:
        conv, conv_flop = ceiling_conv()
        fns[CEILING] = conv
        items[CEILING] = conv_flop / 1e9  # GFLOP per call -> the rate is GFLOP/s
    log(f"encoder batch {batch} {precision}: {', '.join(fns)} ({warmup} warm-up + {reps} timed each)")
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast(precision):
        rates = time_interleaved(fns, reps, warmup, items)
    log(f"  done in {time.perf_counter() - t0:.0f} s")
    return rates


def summarise(rates: dict, batch: int, precision: str, gflop: dict[str, float]) -> list[dict]:
    """Rows per contender; ratio vs the peer's best layout, pairwise; GFLOP/s from img/s."""
    enc = {k: v for k, v in rates.items() if k != CEILING}
    best = best_layouts(enc)
    peer_key = f"{PEER}|{best[PEER]}" if PEER in best else None
    rows = []
    for key, vals in enc.items():
        name, layout = key.split("|")
        row = {"model": name, "layout": layout, "batch": batch, "precision": precision, "img_s": stats(vals),
               "best_layout": best[name] == layout, "gflop_per_img": gflop[name] / 1e9,
               "gflop_s": stats([v * gflop[name] / 1e9 for v in vals])}
        if peer_key:
            row["ratio_vs_peer_best"] = pair_ratio(vals, rates[peer_key])
        if CEILING in rates:
            row["fraction_of_conv"] = pair_ratio([v * gflop[name] / 1e9 for v in vals], rates[CEILING])
        rows.append(row)
    if CEILING in rates:
        rows.append({"model": CEILING, "layout": "CL", "batch": 16, "precision": "bf16",
                     "gflop_s": stats(rates[CEILING])})
    return rows


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["litevae-s", "litevae-b", "litevae-m", "litevae-l", PEER])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--layouts", nargs="+", default=["NCHW", "CL"], help="layouts tried at batch 1")
    p.add_argument("--large-batch-models", nargs="+", default=None,
                   help="models run at batch > 1 (default: all of --models)")
    p.add_argument("--both-layouts-at", nargs="+", default=["litevae-b", PEER],
                   help="models measured in both layouts at batch > 1 (others: their batch-1 best layout) ...")
    p.add_argument("--both-layouts-precisions", nargs="+", default=["fp32", "bf16"],
                   help="... in these precisions")
    p.add_argument("--fixed", nargs="+", default=[], metavar="MODEL:PRECISION:LAYOUT",
                   help="at batch > 1 use exactly this layout (skips the batch-1 layout search for it)")
    args = p.parse_args()
    setup_threads(args.threads)
    if (why := peer_available()) and PEER in args.models:
        log(f"peer skipped: {why}")
        args.models = [m for m in args.models if m != PEER]
    models = build_models(args.models)
    gflop = {n: flops_per_image(n) for n in models}
    large = args.large_batch_models or args.models
    fixed = {tuple(f.split(":")[:2]): f.split(":")[2] for f in args.fixed}
    rows, best_at_1 = [], {}
    for batch in args.batches:
        for precision in args.precisions:
            if batch == 1:
                plan = {n: list(args.layouts) for n in models}
            else:
                plan = {}
                for n in models:
                    if n not in large:
                        continue
                    if (n, precision) in fixed:
                        plan[n] = [fixed[(n, precision)]]
                    elif n in args.both_layouts_at and precision in args.both_layouts_precisions:
                        plan[n] = list(args.layouts)
                    else:
                        plan[n] = [best_at_1.get((n, precision), "CL")]
            with_ceiling = precision == "bf16" and batch == max(args.batches)
            # Batch 1 runs first in a fresh process: 3 warm-up rounds (cheap) let the allocator settle.
            warmup = max(args.warmup, 3) if batch == 1 else args.warmup
            rates = run_loop(models, plan, batch, precision, args.reps, warmup, with_ceiling)
            if batch == 1:
                for n, layout in best_layouts({k: v for k, v in rates.items() if k != CEILING}).items():
                    best_at_1[(n, precision)] = layout
            rows += summarise(rates, batch, precision, gflop)
    write_json(args.json, {"section": "encoder", "resolution": RES, "nz": NZ, "peer": PEER, "rows": rows,
                           "args": {k: (str(v) if k == "json" else v) for k, v in vars(args).items()}})


if __name__ == "__main__":
    main()
