"""The `.safetensors` export format: one file of inference weights, with the spec in its metadata.

An exported model is one `.safetensors` file holding the (EMA when present) autoencoder weights, with
the spec, step, EMA flag and format version in its metadata, written atomically like a checkpoint.
Reading it runs no code from the file; one without its model spec, or of another format version, is
a one-line UserError. Plain data both ways (`checkpoint.StoredModel`); `files.model_file` builds the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from litevae_cli.errors import UserError, one_line
from litevae_cli.files.atomic import write_bytes
from litevae_cli.files.checkpoint import CHECKPOINT_VERSION, StoredModel, check_format_version

EXPORT_FORMAT = "litevae-export"
SUFFIX = ".safetensors"


def write_export_file(out: str | Path, spec: dict, state: dict, step: int | None, used_ema: bool) -> Path:
    """OUT (.safetensors): `state` with the spec, step and EMA flag in the metadata (atomic)."""
    from safetensors.torch import save

    out = Path(out)
    if out.suffix != SUFFIX:
        raise UserError(f"export path must end in {SUFFIX}, got {out}")
    state = {k: v.contiguous() for k, v in state.items()}
    meta = {"format": EXPORT_FORMAT, "version": str(CHECKPOINT_VERSION), "model_spec": json.dumps(spec),
            "step": str(step if step is not None else ""), "ema": str(used_ema)}
    write_bytes(out, save(state, metadata=meta))  # bytes first: a failed write is one line, never a half file
    return out


def read_export_file(path: Path, map_location: str | torch.device = "cpu") -> StoredModel:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device=str(map_location))
    except Exception as err:
        raise UserError(f"cannot load exported model {path}: {one_line(err, 200)}") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise UserError(f"{path} is not a litevae export (metadata format != {EXPORT_FORMAT!r})")
    check_format_version(meta.get("version"), path)
    try:
        spec = json.loads(meta.get("model_spec") or "null")
    except ValueError:
        raise UserError(f"{path}: the model_spec in its metadata is not valid JSON") from None
    step = int(meta["step"]) if str(meta.get("step", "")).isdigit() else None
    return StoredModel(spec, state, path, meta.get("ema") == "True", step, None)
