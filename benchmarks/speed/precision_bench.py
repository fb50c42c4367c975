"""`precision: auto` on this CPU (issue 22 item 3): the phase-A train step in fp32 against what auto picks.

The step is `train_bench.py`'s (litevae-b + smc-decoder as `b-pretrain` sets them, 128 px, L1 + KL + wavelet +
Gaussian in float32, Adam; LPIPS as `--lpips` says), run in three settings interleaved in one process on the
same input: fp32 NCHW (the old default), bf16 autocast channels_last (what the runtime places on a CPU in bf16)
and bf16 NCHW. The row `auto` names what `runtime.resolve_precision("auto", cpu)` chooses here and why; the
ratio is each setting's img/s over fp32's, repeat by repeat. The machine (CPU model, amx / avx512_bf16 / avx2
flags, threads, torch) is recorded with the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_bench.py
from harness import base_parser, log, machine_info, pair_ratio, setup_threads, stats, time_interleaved, write_json
from train_bench import build, make_step

SETTINGS = {"fp32 NCHW": ("fp32", False), "bf16 channels_last": ("bf16", True), "bf16 NCHW": ("bf16", False)}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(reps=5, warmup=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lpips", choices=["off", "random"], default="off",
                   help="off: LPIPS weight 0; random: a random-init backbone (its cost, not its values)")
    args = p.parse_args()
    setup_threads(args.threads)
    from litevae_cli.config import load_config
    from litevae_cli.runtime import resolve_precision
    from litevae_cli.training.losses import GeneratorLoss

    cfg = load_config("b-pretrain", [] if args.lpips == "random" else ["loss.lpips=0"])
    loss_fn = GeneratorLoss(cfg.loss, lpips_random_backbone=args.lpips == "random")
    chosen, reason = resolve_precision("auto", torch.device("cpu"))
    res = cfg.data.resolution
    x = torch.rand(args.batch, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fns = {}
    for name, (precision, channels_last) in SETTINGS.items():
        net, opt = build("litevae-b", cfg, loss_fn, channels_last)
        xs = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        fns[name] = make_step(net, opt, loss_fn, xs, precision)
    log(f"phase-A step {res}px batch {args.batch}: {', '.join(fns)} ({args.warmup} warm-up + {args.reps} timed "
        f"each, interleaved); auto here: {chosen} ({reason})")
    rates = time_interleaved(fns, args.reps, args.warmup, float(args.batch))
    rows = [{"setting": k, "img_s": stats(v), "ratio_vs_fp32": pair_ratio(v, rates["fp32 NCHW"])}
            for k, v in rates.items()]
    for row in rows:
        log(f"  {row['setting']:>20}: {row['img_s']['median']:.2f} img/s, x{row['ratio_vs_fp32']['median']:.2f} "
            "vs fp32")
    write_json(args.json, {"section": "precision", "resolution": res, "batch": args.batch,
                           "auto": {"precision": chosen, "reason": reason}, "lpips": args.lpips,
                           "machine": machine_info(args.threads), "rows": rows})


if __name__ == "__main__":
    main()
