"""`litevae export` as one call: MODEL's inference weights as a .safetensors file or a diffusers folder.

`export(model, out, fmt=...)` checks the options and OUT, loads the model once, writes it and returns
an `ExportSummary` (what the command prints):
- "safetensors": one file (`files.export_file`): weights only, the spec in its metadata.
- "diffusers": config.json + diffusion_pytorch_model.safetensors. The folder's kind follows the model: one
  that `autoencoder_kl.represents` (an sd-vae-encoder + sd-vae-decoder of AutoencoderKL's shape: imported,
  or trained here) becomes a diffusers AutoencoderKL folder, any other a `LiteVAE` folder. The spec's
  latent_factors are the folder's factors (AutoencoderKL: all of them; LiteVAE: scaling_factor and
  shift_factor); `stats` overrides the scaling and shift factors with those of sampled latents from an
  encode-dataset stats.json. Re-exporting over a diffusers folder keeps that folder's scaling and shift
  factors (a model of other latent channels is refused) unless `stats` or `reset_factors` is given.
Every file is published by `files.atomic` (mode 0644 under umask 022; diffusers' save_pretrained alone
would leave 0600).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from litevae_cli.errors import UserError
from litevae_cli.files import autoencoder_kl
from litevae_cli.files.atomic import write_bytes
from litevae_cli.files.diffusers_folder import CONFIG_NAME, write_autoencoder_kl_folder
from litevae_cli.files.export_file import SUFFIX, write_export_file
from litevae_cli.files.model_file import LoadedModel, load_autoencoder
from litevae_cli.files.outputs import check_out_dir, check_out_file, writing
from litevae_cli.latents.stats import STATS_NAME, latent_stats_factors

FORMATS = ("safetensors", "diffusers")


@dataclass
class ExportSummary:
    out: Path
    fmt: str
    described: str  # the model exported, from where (LoadedModel.describe)
    config: dict | None = None  # the diffusers config written
    identity_factors: bool = False  # a diffusers folder with scaling 1, shift 0 and no --stats
    kept_factors: bool = False  # the factors of the folder already at OUT were kept

    def line(self) -> str:
        if self.config is None:
            return f"exported {self.described} to {self.out}"
        c = self.config
        what = (f"{c['encoder_type']} + {c['decoder_type']}" if c["_class_name"] == "LiteVAE"
                else f"block_out_channels {list(c['block_out_channels'])}")
        note = (f" (kept from the existing {self.out / CONFIG_NAME}; --stats or --reset-factors replaces them)"
                if self.kept_factors else " (no --stats: identity factors)" if self.identity_factors else "")
        return (f"exported {self.described} to a diffusers {c['_class_name']} folder {self.out}: {what}, "
                f"latent_channels {c['latent_channels']}, scaling_factor {c['scaling_factor']:.6g}, shift_factor "
                f"{c['shift_factor'] or 0.0:.6g}{note}")


def export(model, out: str | Path, fmt: str = "safetensors", stats=None, use_ema: bool = True,
           reset_factors: bool = False) -> ExportSummary:
    """Check the options and OUT, then write MODEL (EMA weights when present and `use_ema`) in `fmt`."""
    out = Path(out)
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "safetensors":
        if stats is not None or reset_factors:
            raise UserError(f"{'--stats' if stats is not None else '--reset-factors'} goes with --format diffusers "
                            "(a .safetensors export holds weights only)")
        check_out_file(out, "OUT")
        loaded = load_autoencoder(model, use_ema=use_ema)
        with writing(out):
            _write_safetensors(loaded, out)
        return ExportSummary(out, fmt, loaded.describe())
    if out.suffix == SUFFIX:
        raise UserError(f"--format diffusers writes a folder, but OUT {out} ends in {SUFFIX}")
    if stats is not None and not (Path(stats) / STATS_NAME if Path(stats).is_dir() else Path(stats)).is_file():
        raise UserError(f"--stats: no {STATS_NAME} at {stats}")
    check_out_dir(out, "OUT")
    loaded = load_autoencoder(model, use_ema=use_ema)
    kept = None if stats is not None or reset_factors else existing_factors(out, loaded.spec.nz)
    with writing(out):
        config = export_diffusers(loaded, out, stats=stats, factors=kept)
    identity = (config["scaling_factor"], config["shift_factor"] or 0.0) == (1.0, 0.0) and stats is None
    return ExportSummary(out, fmt, loaded.describe(), config, identity, kept is not None)


def existing_factors(out: Path, nz: int) -> dict | None:
    """scaling_factor / shift_factor of a diffusers folder already at OUT, when not the identity; a folder
    for another number of latent channels is refused (its factors would not fit)."""
    try:
        config = json.loads((out / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    factors = {"scaling_factor": config.get("scaling_factor"), "shift_factor": config.get("shift_factor") or 0.0}
    if not isinstance(factors["scaling_factor"], (int, float)) or tuple(factors.values()) == (1.0, 0.0):
        return None
    if config.get("latent_channels") != nz:
        raise UserError(f"OUT {out} holds the factors of a {config.get('latent_channels')}-channel model, this one has "
                        f"{nz}: give --stats or --reset-factors to replace them, or another OUT")
    return factors


def export_model(model, out: str | Path, use_ema: bool = True) -> Path:
    """OUT.safetensors: MODEL's inference weights (EMA when present and `use_ema`)."""
    return _write_safetensors(load_autoencoder(model, use_ema=use_ema), out)


def _write_safetensors(loaded: LoadedModel, out: str | Path) -> Path:
    return write_export_file(out, loaded.spec.to_dict(), loaded.model.state_dict(), loaded.step, loaded.used_ema)


def export_diffusers(model, out, stats=None, use_ema: bool = True, factors: dict | None = None) -> dict:
    """OUT/config.json + the safetensors weights of MODEL (a path or a LoadedModel; module docstring), with
    `factors` (scaling/shift) over the model's own and `stats` over both; returns the config written."""
    from litevae_cli.diffusers_vae import LiteVAE, training_resolution  # diffusers loads only for this format

    loaded = model if isinstance(model, LoadedModel) else load_autoencoder(model, use_ema=use_ema)
    spec = loaded.spec
    if factors:
        spec = dataclasses.replace(spec, latent_factors={**spec.latent_factors, **factors})
    if autoencoder_kl.represents(spec):
        if stats is not None:
            scale, shift = latent_stats_factors(stats, spec.nz)
            spec = dataclasses.replace(spec, latent_factors={**spec.latent_factors, "scaling_factor": scale,
                                                             "shift_factor": shift})
        return write_autoencoder_kl_folder(out, spec, loaded.model.state_dict(),
                                           sample_size=training_resolution(loaded))
    vae = LiteVAE.from_autoencoder(loaded.model, sample_size=training_resolution(loaded),
                                   source={"step": loaded.step, "ema": loaded.used_ema})
    own = {k: spec.latent_factors[k] for k in ("scaling_factor", "shift_factor")
           if spec.latent_factors.get(k) is not None}
    if own:
        vae.register_to_config(**own)
    if stats is not None:
        vae.set_latent_stats(stats)
    save_pretrained_atomic(vae, Path(out))
    return dict(vae.config)


def save_pretrained_atomic(model, out: Path) -> None:
    """model.save_pretrained(out), each file published by `files.atomic` (mode 0644 under umask 022, where
    save_pretrained alone writes 0600; a file replaced whole, never half-written)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as staging:
        with writing(out):  # a failed write while staging (disk full): one line naming OUT
            model.save_pretrained(staging)
        for src in sorted(Path(staging).iterdir()):
            write_bytes(out / src.name, src.read_bytes())
