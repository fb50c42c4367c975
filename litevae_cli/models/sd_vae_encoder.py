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
    """Image [N, 3, H, W] in [-1, 1] -> DiagonalGaussian over [N, nz, H/8, W/8] (for 4 multipliers).

    Every diffusers `AutoencoderKL` encoder (SD 1.x/2.x, SDXL, SD3, FLUX; `litevae_cli.files.autoencoder_kl`):
    `channels` x `mults` = `block_out_channels`, `blocks_per_level` = `layers_per_block`, `quant_conv` =
    `use_quant_conv`, `mid_attention` = `mid_block_add_attention`, `norm_groups` = `norm_num_groups`.
    """

    def __init__(self, nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4),
                 blocks_per_level: int = 2, quant_conv: bool = True, in_channels: int = 3, logvar_init: float = 0.0,
                 mid_attention: bool = True, norm_groups: int = 32):
        super().__init__()
        self.nz = nz  # latent channels
        self.downsample_factor = 2 ** (len(mults) - 1)
        self.conv_in = conv3x3(in_channels, channels)
        down: list[nn.Module] = []
        ch = channels
        for level, mult in enumerate(mults):
            for _ in range(blocks_per_level):
                down.append(ResBlock(ch, channels * mult, groups=norm_groups))
                ch = channels * mult
            if level != len(mults) - 1:
                down.append(Downsample(ch))
        self.down = nn.Sequential(*down)
        mid = [ResBlock(ch, ch, groups=norm_groups)]  # built in order, so seeded initialisations stay as they were
        if mid_attention:
            mid.append(AttnBlock(ch, norm_groups))
        self.mid = nn.Sequential(*mid, ResBlock(ch, ch, groups=norm_groups))
        self.norm_out = group_norm(ch, norm_groups)
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


@register_model("sd-vae-encoder", "encoder", "Stable Diffusion VAE encoder with quant conv (P: 34.16 M at nz=4); "
                "also holds imported diffusers AutoencoderKL encoders (SD 1.x/2.x, SDXL, SD3, FLUX)")
def sd_vae_encoder(nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4),
                   logvar_init: float = 0.0, blocks_per_level: int = 2, quant_conv: bool = True,
                   mid_attention: bool = True, norm_groups: int = 32) -> SDVAEEncoder:
    return SDVAEEncoder(nz, channels, tuple(mults), blocks_per_level, quant_conv, logvar_init=logvar_init,
                        mid_attention=mid_attention, norm_groups=norm_groups)


@register_model("sd-vae-encoder-tiny", "encoder", "tiny SD-VAE encoder for tests", test_variant=True)
def sd_vae_encoder_tiny(nz: int = 4) -> SDVAEEncoder:
    return SDVAEEncoder(nz, channels=32, mults=(1, 1, 1, 1), blocks_per_level=1)
