"""Checkpoints: atomic save (mode 0644 under umask 022), retention, safe load (`weights_only=True` / safetensors), latest, export, MODEL resolution.

A training checkpoint is a plain dict (torch.save) with these keys:
    format="litevae-checkpoint", version=CHECKPOINT_VERSION (2),
    model_spec   ModelSpec.to_dict(): registry names + overrides, never class paths (stored only here)
    model        autoencoder state_dict          ema   EMA state_dict or None
    discriminator_name, discriminator           registry name and state_dict, or None
    optimizer_g, optimizer_d, scaler, step, rng, data_position,
    config       the resolved preset without its `model` section (that is model_spec); `stored_config`
                 gives it whole, also for earlier version-2 files, which repeated the spec there
An exported model is one `.safetensors` file holding the (EMA when present) autoencoder weights, with
the spec, step, source and format version in its metadata, written atomically like a checkpoint. Both load without running code from the file:
a pickle that would run code is refused with a message that says so (and never suggests
weights_only=False). A file without its model spec, or with weights that do not fit the spec, is a
one-line UserError.

Version 2 (litevae 0.2) is the App. G block layout: pre-activation SMC ResBlocks, 2 decoder mid blocks,
SiLU -> SMC head, bare-conv encoder UNet heads. Version 1 files hold the earlier layout, whose SMC blocks
have the same parameter names but compute a different function: they are refused, never loaded.

A MODEL argument (encode-dataset, eval, reconstruct, inspect-latents) is a checkpoint file, a run
directory (its checkpoints/last.pt), an exported .safetensors model, or a diffusers folder: a LiteVAE written
by `litevae export --format diffusers`, or a diffusers AutoencoderKL (SD 1.x/2.x, SDXL, SD3, FLUX; its spec
carries the published latent_factors), read by `litevae_cli.files.diffusers_folder`. A Hugging Face Hub id is
refused with the command that downloads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from litevae_cli.files.atomic import atomic_path
from litevae_cli.errors import UserError, as_user_error, one_line
from litevae_cli.model_spec import ModelSpec
from litevae_cli.models.autoencoder import Autoencoder, create_autoencoder

CHECKPOINT_FORMAT = "litevae-checkpoint"
CHECKPOINT_VERSION = 2  # bump whenever a stored state_dict would mean something else in the current code
EXPORT_FORMAT = "litevae-export"
LAST_NAME = "last.pt"
_NUMBERED = re.compile(r"step-(\d+)\.pt")  # numbered checkpoints, pruned by train.keep_checkpoints


def save_atomic(obj: dict, path: str | Path) -> Path:
    """torch.save to a temp file in the same directory, fsync, then rename over `path` (mode as open() gives)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def prune_numbered(ckpt_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest step-XXXXXXX.pt files (0 = keep all); last.pt is never touched.
    Returns what was deleted. A numbered file that is also last.pt (a hard link) only loses its name."""
    if keep <= 0:
        return []
    numbered = sorted((int(m.group(1)), p) for p in Path(ckpt_dir).glob("step-*.pt")
                      if (m := _NUMBERED.fullmatch(p.name)))
    doomed = [p for _, p in numbered[:-keep]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def safe_torch_load(path: Path, map_location="cpu", what: str = "checkpoint"):
    """torch.load(weights_only=True); any failure is one UserError, and a refused pickle says why."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors, truncated files, disallowed globals
        text = str(err)
        if "weights_only" not in text and "Weights only" not in text:
            raise UserError(f"cannot load {what} {path}: {one_line(err, 200)}") from None
        named = re.search(r"GLOBAL ([\w.]+)", text)
        raise UserError(f"cannot load {what} {path}: refused, because loading it would run code from the file"
                        + (f" (it calls {named.group(1)})" if named else "")
                        + "; only tensors and plain data are loaded") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint safely (weights_only=True: no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    ckpt = safe_torch_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a litevae checkpoint (no format={CHECKPOINT_FORMAT!r} key)")
    check_format_version(ckpt.get("version"), path)
    return ckpt


def check_format_version(version, path: Path) -> None:
    """Refuse a checkpoint or export written for another block layout (see the module docstring)."""
    if str(version) != str(CHECKPOINT_VERSION):
        raise UserError(f"{path} has format version {version} but this litevae reads version {CHECKPOINT_VERSION}: "
                        "version 1 predates the paper's App. G block layout (pre-activation SMC ResBlocks, 2 decoder "
                        "mid blocks, new heads) and its weights do not fit it; retrain, or use litevae 0.1 to read it")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's newest checkpoint (checkpoints/last.pt), or None."""
    last = checkpoint_dir(run_dir) / LAST_NAME
    return last if last.is_file() else None


def resolve_model_path(model: str | Path) -> Path:
    """A checkpoint file, an exported model, a run directory (-> its last checkpoint) or a diffusers folder
    (-> its weights file)."""
    from litevae_cli.files.diffusers_folder import (CONFIG_NAME, WEIGHTS_NAME, hub_download_hint, is_diffusers_folder,
                                              looks_like_hub_id)

    path = Path(model)
    if is_diffusers_folder(path):
        return path / WEIGHTS_NAME
    if path.is_dir() and (path / CONFIG_NAME).is_file() and not checkpoint_dir(path).is_dir():
        raise UserError(f"diffusers folder {path} has no {WEIGHTS_NAME} (only safetensors weights are read)")
    if path.is_dir():
        last = latest_checkpoint(path)
        if last is None:
            raise UserError(f"run directory {path} has no checkpoint ({path / 'checkpoints' / LAST_NAME} is missing)")
        return last
    if looks_like_hub_id(model):
        raise UserError(f"model not found: {model} is no local path; {hub_download_hint(model)}")
    if not path.exists():
        raise UserError(f"model not found: {path} (give a checkpoint .pt, an exported .safetensors, a run directory "
                        "or a diffusers folder)")
    return path


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


def load_weights(module: torch.nn.Module, weights, source) -> None:
    """module.load_state_dict(weights), strict; weights that do not fit are one UserError naming keys."""
    if not isinstance(weights, dict):
        raise UserError(f"{source} holds no weights for {type(module).__name__}")
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches: the useful line is the second
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise UserError(f"the weights in {source} do not fit the model: {lines[-1][:200]}") from None
    if missing or unexpected:
        raise UserError(f"the weights in {source} do not fit the model: "
                        + "; ".join(f"{n} {len(k)} tensor(s), e.g. {k[0]}"
                                    for n, k in (("missing", missing), ("unexpected", unexpected)) if k))


def _build(spec_dict, state_dict, path: Path) -> tuple[Autoencoder, ModelSpec]:
    if not isinstance(spec_dict, dict):
        raise UserError(f"{path} does not say which model it holds (no model_spec); it is not a complete "
                        "litevae checkpoint or export")
    with as_user_error(f"cannot build the model stored in {path}"):
        spec = ModelSpec.from_dict(spec_dict)
        model = create_autoencoder(spec)
    load_weights(model, state_dict, path)
    return model, spec


def load_autoencoder(model: str | Path, use_ema: bool = True, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load MODEL for inference (eval mode), preferring EMA weights when present and `use_ema`."""
    from litevae_cli.files.diffusers_folder import is_diffusers_weights, load_diffusers_folder

    path = resolve_model_path(model)
    if is_diffusers_weights(path):
        return load_diffusers_folder(path, map_location)
    if path.suffix == ".safetensors":
        return _load_export(path, map_location)
    ckpt = load_checkpoint(path, map_location)
    used_ema = bool(use_ema and ckpt.get("ema"))
    net, spec = _build(ckpt.get("model_spec"), ckpt["ema"] if used_ema else ckpt.get("model"), path)
    return LoadedModel(net.eval(), spec, path, used_ema, ckpt.get("step"), stored_config(ckpt))


def stored_config(ckpt: dict) -> dict | None:
    """The run's resolved config as a dict, its `model` section taken from `model_spec` (stored once)."""
    config = ckpt.get("config")
    if not isinstance(config, dict):
        return None
    whole = dict(config)  # a version-2 file of litevae 0.2.0 repeats the spec here: the same value
    whole["model"] = ckpt.get("model_spec")
    return whole


def export_model(checkpoint: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """Write the inference weights of a checkpoint (EMA when present) as one .safetensors file."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"export path must end in .safetensors, got {out}")
    loaded = load_autoencoder(checkpoint, use_ema=use_ema)
    state = {k: v.contiguous() for k, v in loaded.model.state_dict().items()}
    meta = {"format": EXPORT_FORMAT, "version": str(CHECKPOINT_VERSION), "model_spec": json.dumps(loaded.spec.to_dict()),
            "step": str(loaded.step if loaded.step is not None else ""), "ema": str(loaded.used_ema)}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return out


def _load_export(path: Path, map_location) -> LoadedModel:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device=str(map_location))
    except Exception as err:
        raise UserError(f"cannot load exported model {path}: {str(err).splitlines()[0][:200]}") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path} is not a litevae export (metadata format != {EXPORT_FORMAT!r})")
    check_format_version(meta.get("version"), path)
    try:
        spec_dict = json.loads(meta.get("model_spec") or "null")
    except ValueError:
        raise UserError(f"{path}: the model_spec in its metadata is not valid JSON") from None
    net, spec = _build(spec_dict, state, path)
    step = int(meta["step"]) if str(meta.get("step", "")).isdigit() else None
    return LoadedModel(net.eval(), spec, path, meta.get("ema") == "True", step, None)
