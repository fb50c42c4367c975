"""`litevae inspect-latents`: posterior statistics, MMD to N(0, I), scale/shift and plots of a latent space.

Two sources: MODEL encoding `--data` images at `--resolution`, or `--latents` pointing at the shards
written by `litevae encode-dataset` (no model needed). One call to `latents.inspect.inspect_latents`,
which checks the outputs before any work; with --data, unreadable images are skipped, counted in the
report and listed in OUT/skipped.txt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import (MODEL_HELP, BatchSizeOpt, DATA, DeviceOpt, JsonOutOpt, LimitOpt, EmaOpt, OutDirOpt,
                                    PrecisionOpt, ResolutionOpt, check_json_out, user_errors, write_json)


@user_errors
def inspect_latents_command(
    out: OutDirOpt,
    model: Annotated[Optional[str], typer.Argument(
        help=MODEL_HELP[:-1] + " (leave out with --latents).")] = None,
    data: Annotated[Optional[str], DATA] = None,
    latents: Annotated[Optional[str], typer.Option("--latents", help="Instead of MODEL + --data: an "
                                                   "encode-dataset output directory (latents-*.tar) or a "
                                                   "brace pattern of its shards.")] = None,
    resolution: ResolutionOpt = None,
    limit: LimitOpt = None,
    mmd_samples: Annotated[int, typer.Option("--mmd-samples", min=2, help="Images used for the MMD and the "
                                             "histograms (the first N).")] = 1000,
    examples: Annotated[int, typer.Option("--examples", min=1, help="Images shown in latent_channels.png.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the N(0, I) samples of the MMD.")] = 0,
    batch_size: BatchSizeOpt = None,
    json_out: JsonOutOpt = None,
    ema: EmaOpt = True,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
) -> None:
    """Statistics of the posterior (per-channel mean/std/min/max/kurtosis of the mean, average std, KL per
    element), unbiased MMD^2 to N(0, I) with Gaussian kernels sigma = 25..500 on flattened latents
    (P Table 6), the recommended scaling_factor / shift_factor, and PNG plots in --out:
    latent_histograms.png, latent_histograms_normalised.png, latent_channels.png.

    Examples:\n
      litevae inspect-latents runs/b12 --data sample-holdout --out inspect/\n
      litevae inspect-latents --latents latents/ --out inspect/ --json inspect/latents.json
    """
    from litevae_cli import runtime
    from litevae_cli.latents.inspect import inspect_latents

    check_json_out(json_out)
    with runtime.open(device, precision or "fp32", distributed=False) as rt:
        report = inspect_latents(rt, out, model=model, data=data, latents=latents, resolution=resolution, limit=limit,
                                 mmd_samples=mmd_samples, examples=examples, seed=seed, batch_size=batch_size,
                                 use_ema=ema, log=typer.echo)
    print_report(report)
    if json_out is not None:
        write_json(json_out, report)


def print_report(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"posterior mean per channel ({r['images']} images, latent {'x'.join(map(str, r['latent_shape']))})")
    for col in ("ch", "mean", "std", "min", "max", "kurtosis (excess)", "avg posterior std", "KL/elem"):
        table.add_column(col, justify="right")
    pm = r["posterior_mean"]["per_channel"]
    for c, row in enumerate(pm):
        table.add_row(str(c), *(f"{row[k]:.4f}" for k in ("mean", "std", "min", "max", "kurtosis")),
                      f"{r['posterior_std']['per_channel'][c]:.4f}", f"{r['kl_per_element']['per_channel'][c]:.4f}")
    console.print(table)
    console.print(f"average posterior std {r['posterior_std']['mean']:.4f}   KL per element "
                  f"{r['kl_per_element']['mean']:.4f} nats")
    mmd = r["mmd2_to_standard_normal"]
    if "raw" in mmd:
        sig = ", ".join(f"{k}: {v:.3g}" for k, v in mmd["raw"].items())
        nrm = ", ".join(f"{k}: {v:.3g}" for k, v in mmd["normalised"].items())
        console.print(f"MMD^2 to N(0,I) ({mmd['samples']} images, d={mmd['dim']}, seed {mmd['seed']})")
        console.print(f"  raw        {sig}\n  normalised {nrm}")
    else:
        console.print(f"MMD^2: {mmd.get('note')}")
    console.print(f"  estimator: {mmd['estimator']}")
    rec = r["recommended"]
    smp = r["recommended_for_sampled_latents"]
    console.print(f"recommended scaling_factor {rec['scaling_factor']:.6g}  shift_factor {rec['shift_factor']:.6g}  "
                  f"(posterior mean; {rec['convention']})")
    console.print(f"            scaling_factor {smp['scaling_factor']:.6g}  shift_factor {smp['shift_factor']:.6g}  "
                  "(sampled latents: diffusers' latent_dist.sample() * scaling_factor)")
    for name, path in r["plots"].items():
        console.print(f"plot {name}: {path}")
