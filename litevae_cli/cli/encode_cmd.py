"""`litevae encode-dataset`: open the runtime, call `litevae_cli.latents.encode.encode_dataset`, print a summary."""

from __future__ import annotations

import os

from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import MODEL_HELP, BatchSizeOpt, DeviceOpt, OutDirOpt, PrecisionOpt, user_errors


@user_errors
def encode_dataset(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
    data: Annotated[str, typer.Option("--data",
        help="Image folder, WebDataset shards (dir/x-{000000..000009}.tar) or sample/sample-holdout/sample-all.")],
    out: OutDirOpt,
    resolution: Annotated[int, typer.Option("--resolution",
        help="Square crop size in pixels (a multiple of 8, at least 16).")] = 256,
    batch_size: BatchSizeOpt = 32,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per tar shard.")] = 1000,
    flip: Annotated[bool, typer.Option("--flip", help="Also store moments of the horizontally flipped image.")] = False,
    dtype: Annotated[str, typer.Option("--dtype",
        help="Storage dtype of the moments: fp16, bf16 (uint16 bits) or fp32.")] = "fp16",
    overwrite: Annotated[bool, typer.Option("--overwrite",
        help="Delete a previous encoding in --out and start over (default: resume it).")] = False,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0,
        help="Data-loading worker processes (default: min(4, CPU cores)).")] = None,
    crop: Annotated[str, typer.Option("--crop", help="center (resize short side + center crop) or adm.")] = "center",
    limit: Annotated[Optional[int], typer.Option("--limit", min=0,
        help="Only the first N images of the source.")] = None,
) -> None:
    """Encode a dataset into latent WebDataset shards (moments.npy per image) plus stats.json.

    Rerunning the same command after an interruption resumes it (no duplicate, no missing sample).

    Examples:\n
      litevae encode-dataset runs/b12 --data /data/imagenet/train --out latents/in256 --flip\n
      torchrun --nproc_per_node 8 -m litevae_cli encode-dataset model.safetensors --data 'shards/{000000..000999}.tar' --out latents/
    """
    from litevae_cli import runtime
    from litevae_cli.latents.encode import encode_dataset as run
    from litevae_cli.latents.reader import STATS_NAME

    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    with runtime.open(device, precision or "fp32") as rt:
        result = run(rt, model, data, Path(out), resolution=resolution, batch_size=batch_size or 32,
                     shard_size=shard_size, flip=flip, dtype=dtype, overwrite=overwrite, workers=workers, crop=crop,
                     limit=limit)
    if "scaling_factor" not in result:  # not rank 0 under torchrun
        return
    rate = result["encoded_now"] / result["seconds"] if result["seconds"] > 0 else float("nan")
    typer.echo(f"encoded {result['encoded_now']} images now ({rate:.1f} img/s); {result['count']} in total in "
               f"{len(result['shards'])} shards, {result['skipped']} skipped")
    sampled = result["normalization"]["sample"]
    typer.echo(f"scaling_factor {sampled['scaling_factor']:.6g} for sampled latents, {result['scaling_factor']:.6g} "
               f"for posterior means; shift_factor {result['shift_factor']:.6g}; mean posterior std "
               f"{result['posterior_std_mean']:.4g} -> {Path(out) / STATS_NAME}")
