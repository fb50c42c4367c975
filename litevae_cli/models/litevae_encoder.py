"""The LiteVAE encoder (Sadat et al. 2024, Sec. 3 and App. G) and its registered scales S/B/M/L.

Pipeline: 3-level Haar DWT of the image in [-1, 1]; level l's 12 channels (approximation + 3 detail
bands of each RGB channel) divided by 2^l; one feature-extraction UNet per level (12 -> 12 channels,
same resolution); level-1 features average-pooled x4 and level-2 x2, concatenated with level 3 into
36 channels at H/8; an aggregator UNet maps them to 2*nz moments. No 1x1 quant conv (P Table 17).

The UNets are "ADM-like UNets without resampling" (P App. G): conv3 in; for each channel multiplier
`num_res_blocks` ResBlocks; two mid ResBlocks; a mirrored output path of `num_res_blocks` ResBlocks per
multiplier, each concatenating the output of its mirror-image down block; a bare conv3 out (App. G's
`out_layer`, no GroupNorm or SiLU before it).
With no resampling there are no ADM downsample skips, so the path is exactly mirrored. With
num_res_blocks=2 this reproduces P Tables 23/24 within 0.01% at nz=4 (tests/test_models.py); ADM's
extra up block per level would add ~20%.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from litevae_cli.models.layers import ResBlock, conv3x3
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.registry import register_model
from litevae_cli.models.wavelets import wavedec2


class ResampleFreeUNet(nn.Module):
    """ADM-style UNet that keeps the resolution: in_ch -> out_ch channels, same H and W."""

    def __init__(self, in_ch: int, out_ch: int, base: int, mults: tuple[int, ...], num_res_blocks: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.conv_in = conv3x3(in_ch, base)
        skip_channels = []
        ch = base
        self.down = nn.ModuleList()
        for mult in mults:
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, base * mult, dropout))
                ch = base * mult
                skip_channels.append(ch)
        self.mid = nn.Sequential(ResBlock(ch, ch, dropout), ResBlock(ch, ch, dropout))
        self.up = nn.ModuleList()
        for mult in reversed(mults):
            for _ in range(num_res_blocks):
                self.up.append(ResBlock(ch + skip_channels.pop(), base * mult, dropout))
                ch = base * mult
        self.conv_out = conv3x3(ch, out_ch)  # App. G `out_layer`: a bare conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.mid(h)
        for block in self.up:
            h = torch.cat([h, skips.pop()], dim=1)  # rebinding h frees the pre-cat tensor before the block runs
            h = block(h)
        return self.conv_out(h)


class LiteVAEEncoder(nn.Module):
    """Wavelet front end + per-level feature extractors + aggregator -> DiagonalGaussian posterior."""

    levels = 3
    downsample_factor = 8

    def __init__(self, nz: int = 12, extractor_channels: int = 32, extractor_mults: tuple[int, ...] = (1, 2, 3),
                 aggregator_channels: int = 32, aggregator_mults: tuple[int, ...] = (1, 2, 3),
                 num_res_blocks: int = 2, dropout: float = 0.0, wavelet: str = "haar", logvar_init: float = 0.0):
        super().__init__()
        self.nz = nz  # latent channels
        self.wavelet = wavelet  # DWT front end; haar in the paper
        bands = 12  # 4 sub-bands x RGB per level
        self.extractors = nn.ModuleList(
            ResampleFreeUNet(bands, bands, extractor_channels, tuple(extractor_mults), num_res_blocks, dropout)
            for _ in range(self.levels)
        )
        self.aggregator = ResampleFreeUNet(bands * self.levels, 2 * nz, aggregator_channels,
                                           tuple(aggregator_mults), num_res_blocks, dropout)
        # Offset of the log-variance half of the output bias. 0 (the default, as any conv init) starts the
        # posterior at std ~1, i.e. the decoder first sees mostly noise: irrelevant over 100k steps, but it
        # dominates a few-minute CPU run (BENCHMARKS.md, demo curves), where the demo preset sets -6.
        with torch.no_grad():
            self.aggregator.conv_out.bias[nz:] += logvar_init
    def wavelet_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 3 DWT levels of x, level l divided by 2^l (P Sec. 3), in float32."""
        return [coeffs / 2.0 ** (level + 1) for level, coeffs in enumerate(wavedec2(x, self.levels, self.wavelet))]

    def forward(self, x: torch.Tensor) -> DiagonalGaussian:
        if x.shape[-1] % self.downsample_factor or x.shape[-2] % self.downsample_factor:
            raise ValueError(f"LiteVAE needs H and W divisible by 8, got {tuple(x.shape[-2:])}")
        feats = []
        for level, (coeffs, extractor) in enumerate(zip(self.wavelet_features(x), self.extractors)):
            f = extractor(coeffs.to(x.dtype))  # no-op unless the model itself runs in bf16/fp16
            pool = 2 ** (self.levels - 1 - level)
            feats.append(F.avg_pool2d(f, pool) if pool > 1 else f)
        return DiagonalGaussian(self.aggregator(torch.cat(feats, dim=1)))


def _scale(extractor_channels, extractor_mults, aggregator_channels, aggregator_mults):
    def build(nz: int = 12, num_res_blocks: int = 2, dropout: float = 0.0, wavelet: str = "haar",
              logvar_init: float = 0.0) -> LiteVAEEncoder:
        return LiteVAEEncoder(nz, extractor_channels, extractor_mults, aggregator_channels, aggregator_mults,
                              num_res_blocks, dropout, wavelet, logvar_init)
    return build


# Scales from P Tables 23/24 (extractor C, mults; aggregator C, mults).
register_model("litevae-s", "encoder", "LiteVAE-S encoder (P: 1.03 M)")(_scale(16, (1, 2, 2), 16, (1, 2, 2)))
register_model("litevae-b", "encoder", "LiteVAE-B encoder (P: 6.75 M)")(_scale(32, (1, 2, 3), 32, (1, 2, 3)))
register_model("litevae-m", "encoder", "LiteVAE-M encoder (P: 32.75 M)")(_scale(64, (1, 2, 4), 32, (1, 2, 3)))
register_model("litevae-l", "encoder", "LiteVAE-L encoder (P: 41.42 M)")(_scale(64, (1, 2, 4), 64, (1, 2, 4)))
register_model("litevae-tiny", "encoder", "tiny LiteVAE encoder for tests", test_variant=True)(
    _scale(8, (1, 2), 8, (1, 2)))
