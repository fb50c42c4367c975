"""MODEL arguments: any model file or folder -> one model, through one reader per format and one builder.

A MODEL argument (eval, encode-dataset, reconstruct, inspect-latents, export, finetune --from) is a
checkpoint file, a run directory (its checkpoints/last.pt), an exported .safetensors model
(`files.export_file`), or a diffusers folder (`files.diffusers_folder`): a LiteVAE written by
`litevae export --format diffusers`, or a diffusers AutoencoderKL (SD 1.x/2.x, SDXL, SD3, FLUX; its spec
carries the published latent_factors). A Hugging Face Hub id is refused with the command that downloads it.
`read_model` returns the weights as plain data (`StoredModel`); `build` is the one place that turns
them into an `Autoencoder` (a file without its model spec, or with weights that do not fit it: missing,
unexpected, of another shape, or not floating point (int8 and other quantized weights), is a one-line
UserError); `load_autoencoder` is both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from litevae_cli.errors import UserError, as_user_error
from litevae_cli.files.checkpoint import (LAST_NAME, StoredModel, checkpoint_dir, latest_checkpoint,
                                          read_checkpoint_model)
from litevae_cli.files.diffusers_folder import (CONFIG_NAME, WEIGHTS_NAME, is_diffusers_folder, is_diffusers_weights,
                                                read_diffusers_folder)
from litevae_cli.files.download import requested
from litevae_cli.files.hub import download_hint, fetch_vae_folder, is_hub_id
from litevae_cli.files.export_file import SUFFIX, read_export_file
from litevae_cli.model_spec import ModelSpec
from litevae_cli.models.autoencoder import Autoencoder, create_autoencoder


def resolve_model_path(model: str | Path, download: bool = False) -> Path:
    """A checkpoint file, an exported model, a run directory (-> its last checkpoint) or a diffusers folder
    (-> its weights file); a Hugging Face Hub id only with downloads on (`download` or the environment:
    `files.hub`), else a one-line refusal that says how."""
    if is_hub_id(model):
        if not requested(download):
            raise UserError(f"model not found: {model} is no local path; {download_hint(model)}")
        model = fetch_vae_folder(str(model))
    path = Path(model)
    if is_diffusers_folder(path):
        return path / WEIGHTS_NAME
    if path.is_dir() and (path / CONFIG_NAME).is_file() and not checkpoint_dir(path).is_dir():
        raise UserError(f"diffusers folder {path} has no {WEIGHTS_NAME} (only safetensors weights are read)")
    if path.is_dir() and (path / WEIGHTS_NAME).is_file() and not checkpoint_dir(path).is_dir():
        raise UserError(f"diffusers folder {path} has no {CONFIG_NAME} (it says which model the weights are)")
    if path.is_dir():
        last = latest_checkpoint(path)
        if last is None and not checkpoint_dir(path).is_dir() and _holds_images(path):
            raise UserError(f"{path} is a folder of images, not a model (did you swap MODEL and --data?)")
        if last is None:
            raise UserError(f"run directory {path} has no checkpoint ({path / 'checkpoints' / LAST_NAME} is missing)")
        return last
    if not path.exists():
        raise UserError(f"model not found: {path} (give a checkpoint .pt, an exported .safetensors, a run directory "
                        "or a diffusers folder)")
    check_model_file(path)
    return path


MODEL_FORMS = "a training checkpoint .pt, a run folder, an exported .safetensors or a diffusers folder"
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def sniff(path: Path) -> str:
    """What a file holds, from its first bytes: "torch" (zip or pickle), "safetensors", "image" or "other"."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30:
        return "safetensors"
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    return "other"


def check_model_file(path: Path) -> None:
    """A one-line UserError saying what MODEL is when it is an image or no model file at all."""
    try:
        kind = sniff(path)
    except OSError as err:
        raise UserError(f"cannot read model {path}: {err.strerror or err}") from None
    if kind == "image":
        raise UserError(f"{path} is an image, not a model (did you swap MODEL and --data?)")
    if kind == "other":
        raise UserError(f"{path} is not a checkpoint, export or diffusers folder (MODEL is {MODEL_FORMS})")


def _holds_images(folder: Path) -> bool:
    try:
        return any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())
    except OSError:
        return False


def read_model(model: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu",
               download: bool = False) -> StoredModel:
    """MODEL's inference weights as plain data (EMA weights when present and `use_ema`; a Hub id fetched and
    verified when `download`)."""
    path = resolve_model_path(model, download)
    if is_diffusers_weights(path):
        return read_diffusers_folder(path, map_location)
    if path.suffix == SUFFIX:
        return read_export_file(path, map_location)
    return read_checkpoint_model(path, use_ema, map_location)


@dataclass
class LoadedModel:
    """An autoencoder ready for inference, and where its weights came from."""

    model: Autoencoder
    spec: ModelSpec
    path: Path
    used_ema: bool
    step: int | None
    config: dict | None

    def describe(self) -> str:
        weights = "EMA weights" if self.used_ema else "raw (non-EMA) weights"
        step = f", step {self.step}" if self.step is not None else ""
        return f"{self.spec.describe()} from {self.path}{step}, {weights}"

    def report(self) -> dict:
        """The model's entry in every command's report (eval's JSON, inspect-latents', stats.json)."""
        s = self.spec
        return {"name": s.describe(), "encoder": s.encoder, "decoder": s.decoder, "nz": s.nz, "spec": s.to_dict(),
                "path": str(self.path), "step": self.step, "ema": self.used_ema, "described": self.describe()}


def load_weights(module: torch.nn.Module, weights, source) -> None:
    """module.load_state_dict(weights), strict; weights that do not fit are one UserError naming keys."""
    if not isinstance(weights, dict):
        raise UserError(f"{source} holds no weights for {type(module).__name__}")
    own = module.state_dict()
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"the weights in {source} do not fit the model: {key} is a {type(value).__name__}, "
                            "not a tensor")
        # load_state_dict would cast int8 codes into float parameters silently (counters stay integers)
        if key in own and own[key].is_floating_point() and not value.is_floating_point():
            raise UserError(f"the weights in {source} are not floating point: {key} is "
                            f"{str(value.dtype).removeprefix('torch.')} (quantized weights are not read)")
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches: the useful line is the second
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise UserError(f"the weights in {source} do not fit the model: {lines[-1][:200]}") from None
    if missing or unexpected:
        raise UserError(f"the weights in {source} do not fit the model: "
                        + "; ".join(f"{n} {len(k)} tensor(s), e.g. {k[0]}"
                                    for n, k in (("missing", missing), ("unexpected", unexpected)) if k))


def build(stored: StoredModel) -> LoadedModel:
    """The one builder: stored weights -> the registry's model holding them, in eval mode."""
    if not isinstance(stored.spec, dict):
        raise UserError(f"{stored.path} does not say which model it holds (no model_spec); it is not a complete "
                        "litevae checkpoint or export")
    with as_user_error(f"cannot build the model stored in {stored.path}"):
        spec = ModelSpec.from_dict(stored.spec)
        model = create_autoencoder(spec)
    load_weights(model, stored.state, stored.path)
    return LoadedModel(model.eval(), spec, stored.path, stored.used_ema, stored.step, stored.config)


def load_autoencoder(model: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu",
                     download: bool = False) -> LoadedModel:
    """Load MODEL for inference (eval mode), preferring EMA weights when present and `use_ema`."""
    return build(read_model(model, use_ema, map_location, download))
