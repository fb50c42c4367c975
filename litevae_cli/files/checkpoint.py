"""Training checkpoints on disk: atomic save (mode 0644 under umask 022), retention, safe load (`weights_only=True`), latest.

Equal contents give byte-identical files: torch.save writes into a file object, so its zip records are
named `archive/...`, never after the (random) temp file.

A training checkpoint is a plain dict (torch.save) with these keys:
    format="litevae-checkpoint", version=CHECKPOINT_VERSION (2),
    model_spec   ModelSpec.to_dict(): registry names + overrides, never class paths (stored only here)
    model        autoencoder state_dict          ema   EMA state_dict or None
    discriminator_name, discriminator           registry name and state_dict, or None
    optimizer_g, optimizer_d, scaler, step, rng, data_position,
    config       the resolved preset without its `model` section (that is model_spec); `stored_config`
                 gives it whole, also for earlier version-2 files, which repeated the spec there
A checkpoint loads without running code from the file: a pickle that would run code is refused with a
message that says so (and never suggests weights_only=False). `read_checkpoint_model` returns its
inference weights as a `StoredModel` (plain data); `files.model_file` turns any MODEL into a model.

Version 2 (litevae 0.2) is the App. G block layout: pre-activation SMC ResBlocks, 2 decoder mid blocks,
SiLU -> SMC head, bare-conv encoder UNet heads. Version 1 files hold the earlier layout, whose SMC blocks
have the same parameter names but compute a different function: they are refused, never loaded.

"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from litevae_cli.errors import UserError, one_line
from litevae_cli.files.atomic import torch_save

CHECKPOINT_FORMAT = "litevae-checkpoint"
CHECKPOINT_VERSION = 2  # bump whenever a stored state_dict would mean something else in the current code
LAST_NAME = "last.pt"
_NUMBERED = re.compile(r"step-(\d+)\.pt")  # numbered checkpoints, pruned by train.keep_checkpoints


def save_atomic(obj: dict, path: str | Path) -> Path:
    """torch.save to a temp file in the same directory, fsync, then rename over `path` (mode as open() gives).
    Equal contents give equal bytes (fixed zip record names); a failed write is a one-line WriteError and
    leaves the previous file as it was (`files.atomic.torch_save`)."""
    return torch_save(obj, path)


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


def stored_config(ckpt: dict) -> dict | None:
    """The run's resolved config as a dict, its `model` section taken from `model_spec` (stored once)."""
    config = ckpt.get("config")
    if not isinstance(config, dict):
        return None
    whole = dict(config)  # a version-2 file of litevae 0.2.0 repeats the spec here: the same value
    whole["model"] = ckpt.get("model_spec")
    return whole




@dataclass
class StoredModel:
    """A model file's inference weights as plain data: what `files.model_file.build` turns into a model."""

    spec: dict | None  # ModelSpec.to_dict(), as stored
    state: dict | None  # the autoencoder's state_dict (ours: encoder.*, decoder.*)
    path: Path
    used_ema: bool
    step: int | None
    config: dict | None


def read_checkpoint_model(path: Path, use_ema: bool = True, map_location: str | torch.device = "cpu") -> StoredModel:
    """A training checkpoint's inference weights: EMA when present and `use_ema`, else the raw weights."""
    ckpt = load_checkpoint(path, map_location)
    used_ema = bool(use_ema and ckpt.get("ema"))
    return StoredModel(ckpt.get("model_spec"), ckpt["ema"] if used_ema else ckpt.get("model"), path, used_ema,
                       ckpt.get("step"), stored_config(ckpt))
