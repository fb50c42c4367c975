"""Cached `litevae models` rows: the registry's names, kinds, descriptions, parameter counts and GFLOPs
per 256x256 image, so the table prints without importing torch or building a model.

`ROWS` below is generated: `python -m litevae_cli.cli.model_figures` measures every registered model
(`models.complexity.registry_rows`, on the meta device) and rewrites it; tests/test_cli_models.py fails
when a registry change leaves it stale.
"""

from __future__ import annotations

import pprint
import sys
from pathlib import Path

KINDS = ("encoder", "decoder", "discriminator")  # models.registry.KINDS, checked by the same test
_MARK = "# ---- generated below: python -m litevae_cli.cli.model_figures ----"


def cached_rows(kind: str | None = None, include_test: bool = False) -> list[dict]:
    """The registry rows of `kind` (all kinds: None), the tiny test variants only with `include_test`."""
    from litevae_cli.errors import UserError

    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return [dict(r) for r in ROWS if (kind is None or r["kind"] == kind) and (include_test or not r["test_variant"])]


def measured_rows() -> list[dict]:
    """Every registered model's row, measured now (imports torch and builds each model on meta)."""
    from litevae_cli.models.complexity import registry_rows

    return registry_rows(None, include_test=True)


def regenerate(path: Path = Path(__file__)) -> None:
    text = path.read_text()
    head = text[:text.rindex(_MARK) + len(_MARK)]
    path.write_text(f"{head}\nROWS = {pprint.pformat(measured_rows(), width=116, sort_dicts=True)}\n")


if __name__ == "__main__":
    regenerate()
    sys.exit(0)

# ---- generated below: python -m litevae_cli.cli.model_figures ----
ROWS = [{'description': 'Stable Diffusion VAE decoder (GroupNorm, mid attention); also holds imported diffusers '
                 'AutoencoderKL decoders (SD 1.x/2.x, SDXL, SD3, FLUX)',
  'gflops_256': 622.262747136,
  'kind': 'decoder',
  'name': 'sd-vae-decoder',
  'params': 49527043,
  'test_variant': False},
 {'description': 'tiny SD-VAE decoder for tests',
  'gflops_256': 5.127798784,
  'kind': 'decoder',
  'name': 'sd-vae-decoder-tiny',
  'params': 145891,
  'test_variant': True},
 {'description': 'SD-VAE decoder with SMC, no attention, 2 mid blocks (P App. G)',
  'gflops_256': 617.96777984,
  'kind': 'decoder',
  'name': 'smc-decoder',
  'params': 48464416,
  'test_variant': False},
 {'description': 'tiny SMC decoder for tests',
  'gflops_256': 0.886177792,
  'kind': 'decoder',
  'name': 'smc-decoder-tiny',
  'params': 33056,
  'test_variant': True},
 {'description': 'GigaGAN (Kang 2023), C_base 4096, C_max 256, attn 16/8 px, 14.38 M',
  'gflops_256': 6.21392192,
  'kind': 'discriminator',
  'name': 'gigagan',
  'params': 14389016,
  'test_variant': False},
 {'description': 'GigaGAN, 4 levels, C_max 16, attn 8 px (tests)',
  'gflops_256': 0.134489664,
  'kind': 'discriminator',
  'name': 'gigagan-tiny',
  'params': 27054,
  'test_variant': True},
 {'description': 'PatchGAN (taming/LDM), n_layers=3, ndf=64, 2.77 M',
  'gflops_256': 6.293618688,
  'kind': 'discriminator',
  'name': 'patchgan',
  'params': 2765633,
  'test_variant': False},
 {'description': 'PatchGAN, ndf=8, n_layers=2 (tests)',
  'gflops_256': 0.09832448,
  'kind': 'discriminator',
  'name': 'patchgan-tiny',
  'params': 11241,
  'test_variant': True},
 {'description': 'U-Net GAN discriminator, D_ch=64, 44.1 M',
  'gflops_256': 72.215431168,
  'kind': 'discriminator',
  'name': 'unet-disc-l',
  'params': 44067586,
  'test_variant': False},
 {'description': 'U-Net GAN discriminator, D_ch=32, 11.0 M',
  'gflops_256': 18.114151424,
  'kind': 'discriminator',
  'name': 'unet-disc-m',
  'params': 11020674,
  'test_variant': False},
 {'description': 'U-Net GAN discriminator, D_ch=16, 2.76 M',
  'gflops_256': 4.558684672,
  'kind': 'discriminator',
  'name': 'unet-disc-s',
  'params': 2757058,
  'test_variant': False},
 {'description': 'U-Net GAN discriminator, D_ch=4 (tests)',
  'gflops_256': 0.296222848,
  'kind': 'discriminator',
  'name': 'unet-disc-tiny',
  'params': 173026,
  'test_variant': True},
 {'description': 'LiteVAE-B encoder (P: 6.75 M)',
  'gflops_256': 75.674943488,
  'kind': 'encoder',
  'name': 'litevae-b',
  'params': 6755260,
  'test_variant': False},
 {'description': 'LiteVAE-L encoder (P: 41.42 M)',
  'gflops_256': 465.729748992,
  'kind': 'encoder',
  'name': 'litevae-l',
  'params': 41431612,
  'test_variant': False},
 {'description': 'LiteVAE-M encoder (P: 32.75 M)',
  'gflops_256': 447.979716608,
  'kind': 'encoder',
  'name': 'litevae-m',
  'params': 32754748,
  'test_variant': False},
 {'description': 'LiteVAE-S encoder (P: 1.03 M)',
  'gflops_256': 11.516116992,
  'kind': 'encoder',
  'name': 'litevae-s',
  'params': 1038012,
  'test_variant': False},
 {'description': 'tiny LiteVAE encoder for tests',
  'gflops_256': 1.836384256,
  'kind': 'encoder',
  'name': 'litevae-tiny',
  'params': 168956,
  'test_variant': True},
 {'description': 'Stable Diffusion VAE encoder with quant conv (P: 34.16 M at nz=4); also holds imported diffusers '
                 'AutoencoderKL encoders (SD 1.x/2.x, SDXL, SD3, FLUX)',
  'gflops_256': 272.87420928,
  'kind': 'encoder',
  'name': 'sd-vae-encoder',
  'params': 34237936,
  'test_variant': False},
 {'description': 'tiny SD-VAE encoder for tests',
  'gflops_256': 3.941203968,
  'kind': 'encoder',
  'name': 'sd-vae-encoder-tiny',
  'params': 147120,
  'test_variant': True}]
