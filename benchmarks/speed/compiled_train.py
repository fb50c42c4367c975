"""Train step eager vs compiled on the CPU (issue 22 item 5): phase A (b-pretrain: litevae-b + smc-decoder, 128 px,
no discriminator) and phase B (b-finetune: + unet-disc-s with hinge loss, 256 px), img/s of the real
`training.step.train_step`, with the models built, placed and compiled as the training loop does it.

Per phase two arms with the same seed, each with its own train state and loss (so LPIPS is compiled in one only):
eager, and compiled = `runtime.compiled_models.compile_models` of the encoder, decoder, discriminator and LPIPS
network (what `runtime.compile: true` / `--compile` does in `training.loop.run`: on CPU each GroupNorm stays ATen's
kernel, forward and backward). The first step (graph capture
and build, or a load from inductor's on-disk cache) and the second (a recompile for the discriminator's other
grad mode would land here) are timed apart; then --warmup untimed and --reps timed steps, the two arms
interleaved (`harness.time_interleaved`); ratio = compiled / eager, pair by pair. `graphs` counts the graphs
dynamo built in the compiled arm before and after the timed steps (equal: no recompile while timing).
Precision: --precision (default `auto`: what `runtime.resolve_precision` picks here, and why, is recorded).
LPIPS: the preset's network with a random backbone (its cost, not its values) unless --lpips off.

    python benchmarks/speed/compiled_train.py --phases A B --json out.json
    python benchmarks/speed/compiled_train.py --prewarm          # compile each phase once (fills the cache)
    python benchmarks/speed/compiled_train.py --quick --backend eager   # tiny models (plumbing)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import base_parser, log, machine_info, pair_ratio, setup_threads, stats, time_interleaved, write_json

PRESETS = {"A": "b-pretrain", "B": "b-finetune"}
QUICK = {"A": ["model.encoder=litevae-tiny", "model.decoder=smc-decoder-tiny", "model.nz=4", "data.resolution=32",
               "loss.lpips_net=alex"],
         "B": ["model.encoder=litevae-tiny", "model.decoder=smc-decoder-tiny", "model.nz=4", "data.resolution=64",
               "loss.lpips_net=alex", "discriminator.name=unet-disc-tiny"]}  # the UNet D needs 64 px at least


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def arm(phase: str, batch: int, precision: str, lpips: str, quick: bool, compiled: bool, backend: str):
    """(step callable, runtime, config, the compile record or {}) for one arm; the step is `train_step` on one
    fixed uint8 batch (converted to [-1, 1] inside, as the loader's batches are)."""
    from litevae_cli import runtime
    from litevae_cli.config import load_config
    from litevae_cli.runtime.compiled_models import compile_models
    from litevae_cli.training.losses import GeneratorLoss
    from litevae_cli.training.state import build_train_state
    from litevae_cli.training.step import train_step

    overrides = [f"train.batch_size={batch}", f"train.precision={precision}"] + (QUICK[phase] if quick else [])
    cfg = load_config(PRESETS[phase], overrides + (["loss.lpips=0"] if lpips == "off" else []))
    rt = runtime.setup_runtime("cpu", cfg.train.precision, init_distributed=False)
    rt = runtime.configure(rt, cfg.runtime.channels_last, cfg.runtime.cudnn_benchmark)
    loss_fn = rt.place(GeneratorLoss(cfg.loss, cfg.discriminator.loss, lpips_random_backbone=True,
                                     run_precision=rt.precision))
    torch.manual_seed(cfg.train.seed)
    state = build_train_state(rt, cfg)
    record = {}
    if compiled:  # as training.loop.run does for runtime.compile
        record = compile_models(rt.device, state.model.encoder, state.model.decoder, state.disc,
                                getattr(loss_fn, "lpips", None), backend=backend)
    res = cfg.data.resolution
    x = torch.randint(0, 256, (batch, 3, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def step():
        out = train_step(rt, cfg, state, loss_fn, [x])
        if out.nonfinite:
            raise SystemExit(f"phase {phase} {'compiled' if compiled else 'eager'}: non-finite loss")
    return step, rt, cfg, record


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return round(time.perf_counter() - t0, 2)


def phase_run(phase: str, batch: int, args) -> dict:
    torch._dynamo.reset()
    modes = ["compiled"] if args.prewarm else ["eager", "compiled"]
    fns, row = {}, {"phase": phase, "preset": PRESETS[phase], "batch": batch}
    for mode in modes:
        g0 = graphs()
        fn, rt, cfg, record = arm(phase, batch, args.precision, args.lpips, args.quick, mode == "compiled",
                                 args.backend)
        row.update(resolution=cfg.data.resolution, model=f"{cfg.model.encoder} + {cfg.model.decoder}",
                   discriminator=cfg.discriminator.name, lpips=f"{cfg.loss.lpips_net} (random backbone)"
                   if cfg.loss.lpips > 0 else "off", **rt.precision_record())
        first, second = timed(fn), timed(fn)
        row[mode] = {"first_step_s": first, "second_step_s": second}
        if mode == "compiled":
            row[mode].update(modules=record["modules"], group_norm=record["group_norm"], backend=args.backend,
                             graphs_after_warmup=graphs() - g0)
        log(f"phase {phase} {mode}: first step {first} s, second {second} s")
        fns[mode] = fn
    if args.prewarm:
        return row
    g0 = graphs()
    rates = time_interleaved(fns, args.reps, args.warmup, float(batch))
    row["compiled"]["recompiles_while_timing"] = graphs() - g0
    for mode in modes:
        row[mode]["img_s"] = stats(rates[mode])
    row["compiled_over_eager"] = pair_ratio(rates["compiled"], rates["eager"])
    log(f"phase {phase} batch {batch}: eager {row['eager']['img_s']['median']:.2f} img/s, compiled "
        f"{row['compiled']['img_s']['median']:.2f} img/s, x{row['compiled_over_eager']['median']:.2f}")
    return row


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.set_defaults(reps=5, warmup=1)
    p.add_argument("--phases", nargs="+", choices=tuple(PRESETS), default=["A", "B"])
    p.add_argument("--batch-a", type=int, default=4, help="phase-A images per step (default 4)")
    p.add_argument("--batch-b", type=int, default=2, help="phase-B images per step (default 2)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument("--lpips", choices=("random", "off"), default="random",
                   help="random: the preset's LPIPS network with a random backbone; off: LPIPS weight 0")
    p.add_argument("--backend", default="inductor", help="dynamo backend (eager: tracing only, tests)")
    p.add_argument("--prewarm", action="store_true", help="two compiled steps per phase, no eager arm, no timing")
    args = p.parse_args()
    setup_threads(args.threads)
    rows, errors = [], {}
    for ph in args.phases:
        try:
            rows.append(phase_run(ph, args.batch_a if ph == "A" else args.batch_b, args))
        except Exception as e:  # noqa: BLE001 - recorded and reported; the other phase still runs
            errors[ph] = f"{type(e).__name__}: {str(e).strip()[:300]}"
            log(f"!! phase {ph}: {errors[ph]}")
        # after every phase: what ran is kept if a later one fails or the run is cut short
        write_json(args.json, {"section": "compiled_train", "prewarm": args.prewarm, "backend": args.backend,
                               "machine": machine_info(args.threads), "rows": rows, "errors": errors,
                               "args": {k: (str(v) if k == "json" else v) for k, v in vars(args).items()}})
    if errors:
        raise SystemExit(3)  # run.py's PARTIAL: the JSON holds the phases that ran


if __name__ == "__main__":
    main()
