"""`litevae export`: a model's inference weights (EMA when present) as one .safetensors file, or as a
diffusers folder (`--format diffusers`: config.json + diffusion_pytorch_model.safetensors): a diffusers
`AutoencoderKL` for an sd-vae-encoder + sd-vae-decoder model of its shape (imported or trained here), a
`LiteVAE` for any other (`diffusers_vae.export_diffusers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import MODEL_HELP, user_errors

FORMATS = ("safetensors", "diffusers")


@user_errors
def export(
    model: Annotated[str, typer.Argument(help=MODEL_HELP)],
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
    no_ema: Annotated[bool, typer.Option("--no-ema", help="Export the raw weights even if EMA weights exist.")] = False,
) -> None:
    """Export a model for inference: weights only (no optimizer or discriminator), with the registry
    names in the file's metadata (or the folder's config.json). Every MODEL argument (eval,
    encode-dataset, reconstruct, inspect-latents, finetune --from) accepts the result, and loading it
    runs no code from the file.

    Examples:\n
      litevae export runs/b12 litevae-b12.safetensors\n
      litevae export runs/b12 litevae-b12-diffusers --format diffusers --stats latents/in256/stats.json\n
      litevae export vae/sd15 sd15-again --format diffusers   (an imported AutoencoderKL, factors kept)
    """
    from litevae_cli.errors import UserError
    from litevae_cli.files.outputs import check_out_dir, check_out_file, writing

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "safetensors":
        if stats is not None:
            raise UserError("--stats goes with --format diffusers (a .safetensors export holds weights only)")
        from litevae_cli.files.checkpoint import export_model, load_autoencoder

        check_out_file(out, "OUT")
        with writing(out):
            path = export_model(model, out, use_ema=not no_ema)
        typer.echo(f"exported {load_autoencoder(path).describe()}")
        return
    if out.suffix == ".safetensors":
        raise UserError(f"--format diffusers writes a folder, but OUT {out} ends in .safetensors")
    if stats is not None and not (stats / "stats.json" if stats.is_dir() else stats).is_file():
        raise UserError(f"--stats: no stats.json at {stats}")
    check_out_dir(out, "OUT")
    from litevae_cli.diffusers_vae import export_diffusers

    with writing(out):
        c = export_diffusers(model, out, stats=stats, use_ema=not no_ema)
    what = (f"{c['encoder_type']} + {c['decoder_type']}" if c["_class_name"] == "LiteVAE"
            else f"block_out_channels {list(c['block_out_channels'])}")
    identity = (c["scaling_factor"], c["shift_factor"] or 0.0) == (1.0, 0.0)
    typer.echo(f"exported a diffusers {c['_class_name']} folder {out}: {what}, latent_channels {c['latent_channels']}, "
               f"scaling_factor {c['scaling_factor']:.6g}, shift_factor {c['shift_factor'] or 0.0:.6g}"
               + (" (no --stats: identity factors)" if identity and not stats else ""))
