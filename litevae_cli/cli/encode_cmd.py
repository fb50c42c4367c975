"""`litevae encode-dataset`: open the runtime, call `litevae_cli.latents.encode.encode_dataset` (which owns the
defaults: resolution, batch, workers), print its summary on rank 0."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from litevae_cli.cli.common import (BatchSizeOpt, CompileOpt, CropOpt, DataOpt, DeviceOpt, LimitOpt, ModelArg, EmaOpt, OutDirOpt,
                                    PrecisionOpt, ResolutionOpt, WorkersOpt, user_errors)


@user_errors
def encode_dataset(
    model: ModelArg,
    data: DataOpt,
    out: OutDirOpt,
    resolution: ResolutionOpt = None,
    batch_size: BatchSizeOpt = None,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per tar shard.")] = 1000,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Also store moments of the horizontally flipped image.")] = False,
    dtype: Annotated[str, typer.Option("--dtype",
        help="Storage dtype of the moments: fp16, bf16 (uint16 bits) or fp32.")] = "fp16",
    overwrite: Annotated[bool, typer.Option("--overwrite/--no-overwrite",
        help="Delete a previous encoding in --out and start over (default: resume it).")] = False,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    workers: WorkersOpt = None,
    crop: CropOpt = "center",
    limit: LimitOpt = None,
    ema: EmaOpt = True,
    compile_models: CompileOpt = None,
) -> None:
    """Encode a dataset into latent WebDataset shards (moments.npy per image) plus stats.json.

    Rerunning the same command after an interruption resumes it (no duplicate, no missing sample).

    Examples:\n
      litevae encode-dataset runs/b12 --data /data/imagenet/train --out latents/in256 --flip\n
      torchrun --nproc_per_node 8 -m litevae_cli encode-dataset model.safetensors --data 'shards/{000000..000999}.tar' --out latents/
    """
    from litevae_cli import runtime
    from litevae_cli.latents.encode import encode_dataset as run

    with runtime.open(device, precision or "fp32") as rt:
        result = run(rt, model, data, Path(out), resolution=resolution, batch_size=batch_size, shard_size=shard_size,
                     flip=flip, dtype=dtype, overwrite=overwrite, workers=workers, crop=crop, limit=limit,
                     use_ema=ema, compile=bool(compile_models))
    if result is not None:  # rank 0
        print_summary(result, Path(out))


def print_summary(result: dict, out: Path) -> None:
    from litevae_cli.latents.stats import STATS_NAME

    rate = result["encoded_now"] / result["seconds"] if result["seconds"] > 0 else float("nan")
    typer.echo(f"encoded {result['encoded_now']} images now ({rate:.1f} img/s); {result['count']} in total in "
               f"{len(result['shards'])} shards, {result['skipped']} skipped")
    sampled = result["normalization"]["sample"]
    typer.echo(f"scaling_factor {_g(sampled['scaling_factor'])} for sampled latents, {_g(result['scaling_factor'])} "
               f"for posterior means; shift_factor {_g(result['shift_factor'])}; mean posterior std "
               f"{_g(result['posterior_std_mean'], '.4g')} -> {out / STATS_NAME}")


def _g(value, spec: str = ".6g") -> str:
    """A factor as text; None (undefined: a latent with std 0, written as null) as 'undefined'."""
    return "undefined" if value is None else format(value, spec)
