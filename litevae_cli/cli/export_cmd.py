"""`litevae export`: a checkpoint's inference weights as one .safetensors file (EMA when present)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from litevae_cli.cli.common import user_errors


@user_errors
def export(
    model: Annotated[str, typer.Argument(help="Checkpoint .pt or run directory (its last checkpoint).")],
    out: Annotated[Path, typer.Argument(help="Output file, ending in .safetensors.")],
    no_ema: Annotated[bool, typer.Option("--no-ema", help="Export the raw weights even if EMA weights exist.")] = False,
) -> None:
    """Export a model for inference: weights only (no optimizer or discriminator), with the registry
    names in the file's metadata. Every MODEL argument (eval, encode-dataset, reconstruct,
    inspect-latents) accepts the result, and loading it runs no code from the file.

    Examples:\n
      litevae export runs/b12 litevae-b12.safetensors
    """
    from litevae_cli.checkpoint import export_model, load_autoencoder
    from litevae_cli.outputs import check_out_file, writing

    check_out_file(out, "OUT")
    with writing(out):
        path = export_model(model, out, use_ema=not no_ema)
    typer.echo(f"exported {load_autoencoder(path).describe()}")
