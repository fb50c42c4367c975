"""Decoders: the SMC decoder (P Sec. 4.2 / App. G) and the plain SD-VAE decoder.

Both follow the Stable Diffusion VAE decoder (channels 128, multipliers (1,2,4,4), 3 ResBlocks per up
level, nearest x2 upsample + 3x3 conv). They differ only in their blocks, so the paper's
SMC-vs-GroupNorm ablation (Sadat et al. 2024, Table 4) is one flag:
- `smc-decoder`: every GroupNorm+Conv pair becomes a self-modulated conv (P Eq. 3), in App. G's
  pre-activation `ResBlockWithSMC`; the mid block is App. G's `MidBlock2D` (2 ResBlocks, no attention);
  the head's GroupNorm -> SiLU -> conv3 becomes SiLU -> SMC(ch -> 3) by the same rule. 1x1 skip convs,
  conv_in and upsample convs stay plain. 52.19 M params at nz=12 (`litevae models`).
- `sd-vae-decoder`: GroupNorm ResBlocks, mid ResBlock-attention-ResBlock, GroupNorm -> SiLU -> conv3
  head (49.49 M params at nz=4). App. F: the paper's main results use this decoder. With its options it is
  every diffusers `AutoencoderKL` decoder (`litevae_cli.files.autoencoder_kl`): `blocks_per_level` =
  `layers_per_block` + 1, `mid_attention`, `norm_groups`, and the optional 1x1 `post_quant_conv`, applied
  first and owned by the decoder, so a decoder-only finetune trains it too.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from litevae_cli.models.layers import AttnBlock, ResBlock, SMConv2d, SMCResBlock, Upsample, conv3x3, group_norm
from litevae_cli.models.registry import register_model


class VAEDecoder(nn.Module):
    """SD-VAE-shaped decoder: latent [N, nz, h, w] -> image [N, 3, 8h, 8w] (for 4 multipliers)."""

    def __init__(self, nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4),
                 blocks_per_level: int = 3, smc: bool = True, mid_blocks: int = 2, mid_attention: bool = False,
                 out_channels: int = 3, dropout: float = 0.0, post_quant_conv: bool = False, norm_groups: int = 32):
        super().__init__()
        self.nz = nz  # latent channels

        def res(cin: int, cout: int) -> nn.Module:
            return SMCResBlock(cin, cout, dropout) if smc else ResBlock(cin, cout, dropout, norm_groups)

        ch = channels * mults[-1]
        self.post_quant_conv = nn.Conv2d(nz, nz, 1) if post_quant_conv else nn.Identity()
        self.conv_in = conv3x3(nz, ch)
        mid: list[nn.Module] = []
        for i in range(mid_blocks):
            mid.append(res(ch, ch))
            if mid_attention and i == 0:
                mid.append(AttnBlock(ch, norm_groups))
        self.mid = nn.Sequential(*mid)
        up: list[nn.Module] = []
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(blocks_per_level):
                up.append(res(ch, channels * mult))
                ch = channels * mult
            if level != 0:
                up.append(Upsample(ch))
        self.up = nn.Sequential(*up)
        # The head's GroupNorm+conv pair: SD-VAE's GroupNorm -> SiLU -> conv3 becomes SiLU -> SMC(ch -> 3).
        self.norm_out = nn.Identity() if smc else group_norm(ch, norm_groups)
        self.conv_out = SMConv2d(ch, out_channels) if smc else conv3x3(ch, out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(self.post_quant_conv(z))))
        return self.conv_out(F.silu(self.norm_out(h)))


@register_model("smc-decoder", "decoder", "SD-VAE decoder with SMC, no attention, 2 mid blocks (P App. G)")
def smc_decoder(nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4),
                dropout: float = 0.0, blocks_per_level: int = 3) -> VAEDecoder:
    return VAEDecoder(nz, channels, tuple(mults), blocks_per_level=blocks_per_level, smc=True, mid_blocks=2,
                      mid_attention=False, dropout=dropout)


@register_model("sd-vae-decoder", "decoder", "Stable Diffusion VAE decoder (GroupNorm, mid attention); also holds "
                "imported diffusers AutoencoderKL decoders (SD 1.x/2.x, SDXL, SD3, FLUX)")
def sd_vae_decoder(nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4), blocks_per_level: int = 3,
                   mid_attention: bool = True, post_quant_conv: bool = False, norm_groups: int = 32) -> VAEDecoder:
    return VAEDecoder(nz, channels, tuple(mults), blocks_per_level=blocks_per_level, smc=False, mid_blocks=2,
                      mid_attention=mid_attention, post_quant_conv=post_quant_conv, norm_groups=norm_groups)


@register_model("smc-decoder-tiny", "decoder", "tiny SMC decoder for tests", test_variant=True)
def smc_decoder_tiny(nz: int = 4) -> VAEDecoder:
    return VAEDecoder(nz, channels=8, mults=(1, 2, 2, 2), blocks_per_level=1, smc=True, mid_blocks=2)


@register_model("sd-vae-decoder-tiny", "decoder", "tiny SD-VAE decoder for tests", test_variant=True)
def sd_vae_decoder_tiny(nz: int = 4) -> VAEDecoder:
    return VAEDecoder(nz, channels=32, mults=(1, 1, 1, 1), blocks_per_level=1, smc=False, mid_blocks=2,
                      mid_attention=True)
