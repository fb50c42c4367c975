"""`litevae reconstruct`: open the runtime, call `litevae_cli.inference.reconstruct.reconstruct_images`, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import (DeviceOpt, ModelArg, EmaOpt, OutDirOpt, PrecisionOpt, ResolutionOpt,
                                    user_errors)


@user_errors
def reconstruct(
    model: ModelArg,
    images: Annotated[list[str], typer.Argument(help="Image files or folders.")],
    out: OutDirOpt,
    resolution: ResolutionOpt = None,
    native: Annotated[bool, typer.Option("--native/--no-native",
        help="Keep every image at its own size (no resize or crop).")] = False,
    tile: Annotated[int, typer.Option("--tile", min=0,
        help="Process images larger than this in NxN tiles (multiple of 8; 0 = never tile).")] = 512,
    overlap: Annotated[Optional[int], typer.Option("--overlap", min=0,
        help="Tile overlap in pixels, blended (multiple of 8; default tile/4).")] = None,
    ema: EmaOpt = True,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
) -> None:
    """Reconstruct images: writes NAME_recon.png and NAME_compare.png (original | reconstruction | 5x error
    map) per image and prints PSNR (uint8, peak 255) and SSIM (Gaussian, data range 1).

    Examples:\n
      litevae reconstruct runs/b12 photo.jpg --out recon/\n
      litevae reconstruct model.safetensors big_scan.png --native --tile 512 --out recon/
    """
    from litevae_cli import runtime
    from litevae_cli.inference.reconstruct import reconstruct_images

    with runtime.open(device, precision or "fp32", distributed=False) as rt:
        results = reconstruct_images(rt, model, images, Path(out), resolution=resolution, native=native, tile=tile,
                                     overlap=overlap, use_ema=ema)
    print_table(results, out)


def print_table(results, out) -> None:
    from rich.console import Console
    from rich.table import Table

    from litevae_cli.inference.reconstruct import ERROR_AMPLIFY

    table = Table(title=f"reconstructions in {out} (error map amplified {ERROR_AMPLIFY:g}x)")
    for col, justify in (("image", "left"), ("size", "right"), ("tiles", "right"), ("PSNR dB", "right"),
                         ("SSIM", "right")):
        table.add_column(col, justify=justify)
    for r in results:
        table.add_row(r.name, f"{r.size[0]}x{r.size[1]}", str(r.tiles), f"{r.psnr:.2f}", _ssim(r.ssim))
    if len(results) > 1:
        ssims = [r.ssim for r in results if r.ssim is not None]
        table.add_row("mean", "", "", f"{sum(r.psnr for r in results) / len(results):.2f}",
                      _ssim(sum(ssims) / len(ssims) if ssims else None)
                      + (f" ({len(ssims)} of {len(results)})" if ssims and len(ssims) < len(results) else ""))
    Console().print(table)
    for r in results:
        if r.ssim is None:
            typer.echo(f"SSIM not available for {r.name}: {r.ssim_note}")


def _ssim(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
