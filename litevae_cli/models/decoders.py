"""Decoders: the SMC decoder (LiteVAE's default, as open-LiteVAE builds it) and the SD-VAE decoder.

Both follow the Stable Diffusion VAE decoder (channels 128, multipliers (1,2,4,4), 3 ResBlocks per up
level, nearest x2 upsample + 3x3 conv). They differ only in their blocks, so the paper's
SMC-vs-GroupNorm ablation (Sadat et al. 2024, Sec. 4) is one flag:
- `smc-decoder`: every GroupNorm+Conv pair becomes a self-modulated conv (P Eq. 3); the mid block has
  3 ResBlocks and no attention (open-LiteVAE, 53.33 M params); the head is SMC -> SiLU -> conv3.
  1x1 skip convs, conv_in and upsample convs stay plain.
- `sd-vae-decoder`: GroupNorm ResBlocks, mid ResBlock-attention-ResBlock, GroupNorm -> SiLU -> conv3
  head (49.49 M params at nz=4).
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
                 blocks_per_level: int = 3, smc: bool = True, mid_blocks: int = 3, mid_attention: bool = False,
                 out_channels: int = 3):
        super().__init__()
        self.nz = nz  # latent channels
        block = SMCResBlock if smc else ResBlock
        ch = channels * mults[-1]
        self.conv_in = conv3x3(nz, ch)
        mid: list[nn.Module] = []
        for i in range(mid_blocks):
            mid.append(block(ch, ch))
            if mid_attention and i == 0:
                mid.append(AttnBlock(ch))
        self.mid = nn.Sequential(*mid)
        up: list[nn.Module] = []
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(blocks_per_level):
                up.append(block(ch, channels * mult))
                ch = channels * mult
            if level != 0:
                up.append(Upsample(ch))
        self.up = nn.Sequential(*up)
        # The head's GroupNorm+conv pair: an SMC in the SMC decoder, GroupNorm in SD-VAE's.
        self.norm_out = SMConv2d(ch, ch) if smc else group_norm(ch)
        self.conv_out = conv3x3(ch, out_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


@register_model("smc-decoder", "decoder", "SD-VAE decoder with SMC, no attention, 3 mid blocks (open-LiteVAE)")
def smc_decoder(nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4)) -> VAEDecoder:
    return VAEDecoder(nz, channels, tuple(mults), smc=True, mid_blocks=3, mid_attention=False)


@register_model("sd-vae-decoder", "decoder", "Stable Diffusion VAE decoder (GroupNorm, mid attention)")
def sd_vae_decoder(nz: int = 12, channels: int = 128, mults: tuple[int, ...] = (1, 2, 4, 4)) -> VAEDecoder:
    return VAEDecoder(nz, channels, tuple(mults), smc=False, mid_blocks=2, mid_attention=True)


@register_model("smc-decoder-tiny", "decoder", "tiny SMC decoder for tests", test_variant=True)
def smc_decoder_tiny(nz: int = 4) -> VAEDecoder:
    return VAEDecoder(nz, channels=8, mults=(1, 2, 2, 2), blocks_per_level=1, smc=True, mid_blocks=1)


@register_model("sd-vae-decoder-tiny", "decoder", "tiny SD-VAE decoder for tests", test_variant=True)
def sd_vae_decoder_tiny(nz: int = 4) -> VAEDecoder:
    return VAEDecoder(nz, channels=32, mults=(1, 1, 1, 1), blocks_per_level=1, smc=False, mid_blocks=2,
                      mid_attention=True)
