"""The Stable Diffusion VAE encoder (LDM's `Encoder` + quant conv), the baseline LiteVAE is measured against.

Channels 128, multipliers (1,2,4,4), 2 ResBlocks per level, stride-2 conv downsampling between levels,
mid ResBlock-attention-ResBlock, GroupNorm -> SiLU -> conv3 to 2*nz moments, then the 1x1 quant conv.
34.16 M params at nz=4 (P Table 3).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from litevae_cli.models.layers import AttnBlock, Downsample, ResBlock, conv3x3, group_norm
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.registry import register_model


class SDVAEEncoder(nn.Module):
    """Image [N, 3, H, W] in [-1, 1] -> DiagonalGaussian over [N, nz, H/8, W/8] (for 4 multipliers)."""

    def __init__(self, nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4),
                 blocks_per_level: int = 2, quant_conv: bool = True, in_channels: int = 3, logvar_init: float = 0.0):
        super().__init__()
        self.nz = nz  # latent channels
        self.downsample_factor = 2 ** (len(mults) - 1)
        self.conv_in = conv3x3(in_channels, channels)
        down: list[nn.Module] = []
        ch = channels
        for level, mult in enumerate(mults):
            for _ in range(blocks_per_level):
                down.append(ResBlock(ch, channels * mult))
                ch = channels * mult
            if level != len(mults) - 1:
                down.append(Downsample(ch))
        self.down = nn.Sequential(*down)
        self.mid = nn.Sequential(ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch))
        self.norm_out = group_norm(ch)
        self.conv_out = conv3x3(ch, 2 * nz)
        self.quant_conv = nn.Conv2d(2 * nz, 2 * nz, 1) if quant_conv else nn.Identity()
        # Offset of the log-variance half of the last conv's bias, as LiteVAEEncoder's `logvar_init`, so the
        # two encoders can start from the same posterior std in a matched comparison (REPRODUCTION.md).
        with torch.no_grad():
            last = self.quant_conv if quant_conv else self.conv_out
            last.bias[nz:] += logvar_init

    def forward(self, x: torch.Tensor) -> DiagonalGaussian:
        h = self.mid(self.down(self.conv_in(x)))
        return DiagonalGaussian(self.quant_conv(self.conv_out(F.silu(self.norm_out(h)))))


@register_model("sd-vae-encoder", "encoder", "Stable Diffusion VAE encoder with quant conv (P: 34.16 M at nz=4)")
def sd_vae_encoder(nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4),
                   logvar_init: float = 0.0) -> SDVAEEncoder:
    return SDVAEEncoder(nz, channels, tuple(mults), logvar_init=logvar_init)


@register_model("sd-vae-encoder-tiny", "encoder", "tiny SD-VAE encoder for tests", test_variant=True)
def sd_vae_encoder_tiny(nz: int = 4) -> SDVAEEncoder:
    return SDVAEEncoder(nz, channels=32, mults=(1, 1, 1, 1), blocks_per_level=1)
