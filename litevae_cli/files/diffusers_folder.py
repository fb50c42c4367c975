"""The diffusers folders litevae reads and writes (`save_pretrained` layout), without importing diffusers.

A folder holds config.json and diffusion_pytorch_model.safetensors; config.json's `_class_name` says which:
- "LiteVAE" (`litevae export --format diffusers` of a LiteVAE): the encoder and decoder registry names
  (encoder_type, decoder_type), latent_channels, their kwargs, the format version and the normalisation
  factors (see `litevae_cli.diffusers_vae`); the weights have the same keys as a training checkpoint's
  `model` (encoder.*, decoder.*). `litevae_cli.diffusers_vae.LiteVAE` writes and reads it through diffusers.
- "AutoencoderKL": a diffusers VAE (SD 1.x/2.x, SDXL, SD3, FLUX, or `litevae export --format diffusers` of
  an sd-vae-encoder + sd-vae-decoder model), converted by `litevae_cli.files.autoencoder_kl`; plain
  `diffusers.AutoencoderKL.from_pretrained` reads what `write_autoencoder_kl_folder` writes.
Every MODEL argument (eval, encode-dataset, reconstruct, inspect-latents, finetune --from) accepts either
folder or its weights file, through `files.model_file.load_autoencoder`. Any other `_class_name` is a one-line error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from litevae_cli.errors import UserError, one_line
from litevae_cli.files import autoencoder_kl
from litevae_cli.files.atomic import write_bytes, write_text
from litevae_cli.files.checkpoint import StoredModel, check_format_version
from litevae_cli.model_spec import ModelSpec

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


def read_config(folder: str | Path, classes: tuple[str, ...] = (CLASS_NAME,)) -> dict:
    """config.json of a diffusers folder whose `_class_name` is one of `classes`; anything else (another
    diffusers model, broken JSON) is a one-line UserError, which names the loader of an AutoencoderKL."""
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path}: {one_line(err, 200)}") from None
    found = config.get("_class_name") if isinstance(config, dict) else None
    if found in classes:
        return config
    if found == autoencoder_kl.CLASS_NAME:
        raise UserError(f"{Path(folder)} is a diffusers AutoencoderKL: load it with diffusers.AutoencoderKL."
                        "from_pretrained, or pass it to any litevae MODEL argument")
    raise UserError(f"{path} describes a {found or 'non-diffusers'} model, not a " + " or ".join(classes))


def spec_from_config(config: dict) -> dict:
    """The ModelSpec dict (registry names + overrides) that a LiteVAE config describes."""
    return {"encoder": config.get("encoder_type"), "decoder": config.get("decoder_type"),
            "nz": config.get("latent_channels"),
            "encoder_kwargs": dict(config.get("encoder_kwargs") or {}),
            "decoder_kwargs": dict(config.get("decoder_kwargs") or {})}


def read_diffusers_folder(weights: Path, map_location: str | torch.device = "cpu") -> StoredModel:
    """A LiteVAE or AutoencoderKL folder's weights file -> its weights as plain data, under our key names
    (safetensors: no code runs)."""
    folder = weights.parent
    config = read_config(folder, (CLASS_NAME, autoencoder_kl.CLASS_NAME))
    if config["_class_name"] == CLASS_NAME:
        check_format_version(config.get(VERSION_KEY), folder)
        spec = spec_from_config(config)
    else:
        spec = autoencoder_kl.spec_from_config(config, str(folder / CONFIG_NAME)).to_dict()
    state = load_safetensors(weights, map_location)
    if config["_class_name"] != CLASS_NAME:
        state = autoencoder_kl.state_from_diffusers(state, ModelSpec.from_dict(spec), str(weights))
    source = config.get("source") or {}
    step = source.get("step") if isinstance(source.get("step"), int) else None
    return StoredModel(spec, state, folder, bool(source.get("ema")), step, None)


def load_safetensors(weights: Path, map_location, what: str = "") -> dict:
    """A .safetensors file's tensors (no code runs); any failure is one UserError."""
    from safetensors.torch import load_file

    try:
        return load_file(str(weights), device=str(map_location))
    except Exception as err:
        raise UserError(f"cannot load {what}{weights}: {one_line(err, 200)}") from None


def write_autoencoder_kl_folder(out: str | Path, spec: ModelSpec, state: dict, sample_size: int = 256) -> dict:
    """OUT/config.json + OUT/diffusion_pytorch_model.safetensors of an AutoencoderKL-shaped model (each file
    written atomically, mode as open() gives it); returns the config written."""
    from safetensors.torch import save

    config = {"_class_name": autoencoder_kl.CLASS_NAME, **_diffusers_version(),
              **autoencoder_kl.config_from_spec(spec, sample_size)}
    weights = autoencoder_kl.state_to_diffusers(state, spec)
    out = Path(out)
    write_bytes(out / WEIGHTS_NAME, save(weights, metadata={"format": "pt"}))  # a failed write: one WriteError line
    write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config


def _diffusers_version() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"_diffusers_version": version("diffusers")}
    except PackageNotFoundError:
        return {}


def looks_like_hub_id(name) -> bool:
    """"owner/name" that is no local path: a Hugging Face Hub repository id."""
    text = str(name)
    return (not Path(text).exists() and Path(text).suffix not in (".pt", ".safetensors")
            and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None)
