"""`litevae export`: one call to `files.export.export` (a .safetensors file, or a diffusers folder with
`--format diffusers`: an AutoencoderKL for an sd-vae-encoder + sd-vae-decoder model of its shape, a
`LiteVAE` for any other); prints its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import ModelArg, EmaOpt, user_errors


@user_errors
def export(
    model: ModelArg,
    out: Annotated[Path, typer.Argument(help="Output: a file ending in .safetensors, or a folder with --format "
                                             "diffusers.")],
    fmt: Annotated[str, typer.Option("--format", help="safetensors (one file) or diffusers (a folder that "
                                                         "diffusers pipelines load: an AutoencoderKL for an "
                                                         "sd-vae-encoder + sd-vae-decoder model of its shape, "
                                                         "else a LiteVAE).")]
    = "safetensors",
    stats: Annotated[Optional[Path], typer.Option("--stats", help="With --format diffusers: encode-dataset's "
                                                                  "stats.json (or its folder); its factors for "
                                                                  "sampled latents become the config's "
                                                                  "scaling_factor / shift_factor.")] = None,
    reset_factors: Annotated[bool, typer.Option("--reset-factors/--keep-factors", help="With --format diffusers over an existing "
                                                                        "folder: write the model's own factors "
                                                                        "(identity without --stats) instead of "
                                                                        "keeping the folder's scaling_factor / "
                                                                        "shift_factor.")] = False,
    ema: EmaOpt = True,
) -> None:
    """Export a model for inference: weights only (no optimizer or discriminator), with the registry
    names in the file's metadata (or the folder's config.json). Every MODEL argument (eval,
    encode-dataset, reconstruct, inspect-latents, finetune --from) accepts the result, and loading it
    runs no code from the file. Re-exporting over a diffusers folder keeps its scaling_factor /
    shift_factor unless --stats or --reset-factors is given.

    Examples:\n
      litevae export runs/b12 litevae-b12.safetensors\n
      litevae export runs/b12 litevae-b12-diffusers --format diffusers --stats latents/in256/stats.json\n
      litevae export vae/sd15 sd15-again --format diffusers   (an imported AutoencoderKL, factors kept)
    """
    from litevae_cli.files.export import export as run

    typer.echo(run(model, out, fmt=fmt, stats=stats, use_ema=ema, reset_factors=reset_factors).line())
