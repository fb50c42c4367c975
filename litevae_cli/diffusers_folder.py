"""The diffusers folder of a LiteVAE (`save_pretrained` layout), read without importing diffusers.

The folder holds:
  config.json                          the `LiteVAE` config: `_class_name` "LiteVAE", the encoder and
                                       decoder registry names (encoder_type, decoder_type), latent_channels,
                                       their kwargs, the format version and the normalisation factors
                                       (see `litevae_cli.diffusers_vae`)
  diffusion_pytorch_model.safetensors  the autoencoder's weights, with the same keys as a training
                                       checkpoint's `model` (encoder.*, decoder.*)
`litevae_cli.diffusers_vae.LiteVAE` writes and reads it through diffusers. This module lets every MODEL
argument (eval, encode-dataset, reconstruct, inspect-latents, finetune --from) accept the folder or its
weights file too, through `checkpoint.load_autoencoder`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from litevae_cli.errors import UserError

CLASS_NAME = "LiteVAE"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
VERSION_KEY = "litevae_format_version"


def is_diffusers_folder(path: str | Path) -> bool:
    """A folder with a config.json and the diffusers weights file (whatever the config says)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def is_diffusers_weights(path: str | Path) -> bool:
    """The weights file of a diffusers folder (a litevae export is any other .safetensors file)."""
    path = Path(path)
    return path.name == WEIGHTS_NAME and (path.parent / CONFIG_NAME).is_file()


def read_config(folder: str | Path) -> dict:
    """config.json of a LiteVAE folder; anything else (another diffusers model, broken JSON) is a UserError."""
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {str(err).splitlines()[0][:200]}") from None
    if not isinstance(config, dict) or config.get("_class_name") != CLASS_NAME:
        found = config.get("_class_name") if isinstance(config, dict) else None
        raise UserError(f"{path} describes a {found or 'non-diffusers'} model, not a {CLASS_NAME}")
    return config


def spec_from_config(config: dict) -> dict:
    """The ModelSpec dict (registry names + overrides) that a LiteVAE config describes."""
    return {"encoder": config.get("encoder_type"), "decoder": config.get("decoder_type"),
            "nz": config.get("latent_channels"),
            "encoder_kwargs": dict(config.get("encoder_kwargs") or {}),
            "decoder_kwargs": dict(config.get("decoder_kwargs") or {})}


def load_diffusers_folder(weights: Path, map_location: str | torch.device = "cpu"):
    """A LiteVAE diffusers folder's weights file -> checkpoint.LoadedModel (safetensors: no code runs)."""
    from safetensors.torch import load_file

    from litevae_cli.checkpoint import LoadedModel, _build, check_format_version

    folder = weights.parent
    config = read_config(folder)
    check_format_version(config.get(VERSION_KEY), folder)
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as err:
        raise UserError(f"cannot load {weights}: {str(err).splitlines()[0][:200]}") from None
    net, spec = _build(spec_from_config(config), state, folder)
    source = config.get("source") or {}
    step = source.get("step") if isinstance(source.get("step"), int) else None
    return LoadedModel(net.eval(), spec, folder, bool(source.get("ema")), step, None)
