"""GAN discriminators for LiteVAE training: the PatchGAN of taming-transformers/LDM and the
U-Net discriminator of Schönfeld et al. 2020 (the one the LiteVAE paper uses).

Every discriminator takes images [N, 3, H, W] in [-1, 1] and returns a tuple of logit tensors:
PatchGAN gives `(patch_logits [N, 1, h, w],)`, the U-Net discriminator gives
`(pixel_logits [N, 1, H, W], global_logits [N])`; the GigaGAN discriminator (`gigagan.py`) gives one
head of all its levels' logits, `(logits [N, L],)`. The loss code relies on this interface.
This module holds only nn.Modules, their registered builders and pure tensor helpers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from litevae_cli.models.registry import register_model

# --------------------------------------------------------------------------------------------
# PatchGAN
# --------------------------------------------------------------------------------------------


class PatchGANDiscriminator(nn.Module):
    """PatchGAN discriminator as the NLayerDiscriminator of taming-transformers / LDM
    (Isola et al. 2017, pix2pix; Esser et al. 2021): 4x4 convs, BatchNorm, LeakyReLU(0.2).

    With `n_layers` stride-2 convs the receptive field of one output logit grows with depth;
    at n_layers=3, ndf=64 the network has ~2.77 M parameters.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last hidden conv keeps the resolution
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_patchgan_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.main(x),)


def _patchgan_init(m: nn.Module) -> None:
    """taming's weights_init: convs N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# U-Net discriminator
# --------------------------------------------------------------------------------------------


def _sn_conv(cin: int, cout: int, k: int) -> nn.Module:
    """Orthogonally initialised conv (BigGAN's D_init='ortho') wrapped in spectral norm."""
    conv = nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2)
    nn.init.orthogonal_(conv.weight)
    nn.init.zeros_(conv.bias)
    return spectral_norm(conv)


def _sn_linear(cin: int, cout: int) -> nn.Module:
    lin = nn.Linear(cin, cout)
    nn.init.orthogonal_(lin.weight)
    nn.init.zeros_(lin.bias)
    return spectral_norm(lin)


class DBlock(nn.Module):
    """BigGAN discriminator residual block (Brock et al. 2019), wide variant, 2x avg-pool down.

    Residual: [ReLU] -> conv3x3 -> ReLU -> conv3x3 -> avgpool; shortcut: conv1x1 + avgpool (conv
    after the pool when the block is not pre-activated, i.e. for the very first block).
    """

    def __init__(self, cin: int, cout: int, preactivation: bool = True):
        super().__init__()
        self.preactivation = preactivation
        self.conv1 = _sn_conv(cin, cout, 3)
        self.conv2 = _sn_conv(cout, cout, 3)
        self.conv_sc = _sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        sc = F.avg_pool2d(self.conv_sc(x), 2) if self.preactivation else self.conv_sc(F.avg_pool2d(x, 2))
        return h + sc


class UpBlock(nn.Module):
    """Unconditional BigGAN generator block as used in the U-Net GAN decoder (GBlock2, no BN):
    ReLU -> nearest 2x up -> conv3x3 -> ReLU -> conv3x3, plus an upsampled conv1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _sn_conv(cin, cout, 3)
        self.conv2 = _sn_conv(cout, cout, 3)
        self.conv_sc = _sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(x), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.conv1(h)))
        return h + self.conv_sc(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# Channel multipliers of D_ch at 256x256 (Schönfeld et al. 2020, BigGAN-style arch[256]).
ENCODER_MULTS = (1, 2, 4, 8, 8, 16)  # 6 DBlocks: 256 -> 4
DECODER_MULTS = (8, 8, 4, 2, 1, 1)  # 6 UpBlocks: 4 -> 256; inputs concat the encoder skip


class UNetDiscriminator(nn.Module):
    """U-Net GAN discriminator (Schönfeld, Schiele, Khoreva, CVPR 2020, "A U-Net Based
    Discriminator for Generative Adversarial Networks"), unconditional, as used by LiteVAE.

    Encoder: 6 BigGAN DBlocks with D_ch*(1,2,4,8,8,16) channels; the global head is a linear layer
    on the spatial sum of ReLU(bottleneck). Decoder: 6 up blocks with D_ch*(8,8,4,2,1,1) channels,
    each after the first taking [previous, encoder feature of the same size] concatenated; a 1x1
    conv gives per-pixel logits. Spectral norm on every conv and linear. Sides must be multiples
    of 64. Parameter count is ~10.77 * D_ch^2 (2.76 M at D_ch=16).
    """

    def __init__(self, in_channels: int = 3, d_ch: int = 64):
        super().__init__()
        enc = [d_ch * m for m in ENCODER_MULTS]
        dec = [d_ch * m for m in DECODER_MULTS]
        self.down = nn.ModuleList(
            DBlock(cin, cout, preactivation=i > 0) for i, (cin, cout) in enumerate(zip([in_channels] + enc[:-1], enc))
        )
        # Up block 0 takes the bottleneck; block i > 0 takes dec[i-1] + the encoder skip enc[5-i].
        dec_in = [enc[-1]] + [dec[i - 1] + enc[len(enc) - 1 - i] for i in range(1, len(dec))]
        self.up = nn.ModuleList(UpBlock(cin, cout) for cin, cout in zip(dec_in, dec))
        self.global_head = _sn_linear(enc[-1], 1)
        self.pixel_head = _sn_conv(dec[-1], 1, 1)
        self.downscale = 2 ** len(self.down)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-1] % self.downscale or x.shape[-2] % self.downscale:
            raise ValueError(
                f"UNetDiscriminator needs sides that are multiples of {self.downscale}, got {tuple(x.shape)}"
            )
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
        global_logits = self.global_head(torch.sum(F.relu(h), dim=(2, 3))).squeeze(1)
        for i, block in enumerate(self.up):
            if i > 0:
                h = torch.cat([h, skips[len(skips) - 1 - i]], dim=1)
            h = block(h)
        return self.pixel_head(h), global_logits


# --------------------------------------------------------------------------------------------
# Registered builders
# --------------------------------------------------------------------------------------------


@register_model("patchgan", kind="discriminator", description="PatchGAN (taming/LDM), n_layers=3, ndf=64, 2.77 M")
def patchgan(in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> nn.Module:
    return PatchGANDiscriminator(in_channels=in_channels, ndf=ndf, n_layers=n_layers)


@register_model(
    "patchgan-tiny", kind="discriminator", description="PatchGAN, ndf=8, n_layers=2 (tests)", test_variant=True
)
def patchgan_tiny(in_channels: int = 3, ndf: int = 8, n_layers: int = 2) -> nn.Module:
    return PatchGANDiscriminator(in_channels=in_channels, ndf=ndf, n_layers=n_layers)


@register_model("unet-disc-s", kind="discriminator", description="U-Net GAN discriminator, D_ch=16, 2.76 M")
def unet_disc_s(in_channels: int = 3) -> nn.Module:
    return UNetDiscriminator(in_channels=in_channels, d_ch=16)


@register_model("unet-disc-m", kind="discriminator", description="U-Net GAN discriminator, D_ch=32, 11.0 M")
def unet_disc_m(in_channels: int = 3) -> nn.Module:
    return UNetDiscriminator(in_channels=in_channels, d_ch=32)


@register_model("unet-disc-l", kind="discriminator", description="U-Net GAN discriminator, D_ch=64, 44.1 M")
def unet_disc_l(in_channels: int = 3) -> nn.Module:
    return UNetDiscriminator(in_channels=in_channels, d_ch=64)


@register_model(
    "unet-disc-tiny", kind="discriminator", description="U-Net GAN discriminator, D_ch=4 (tests)", test_variant=True
)
def unet_disc_tiny(in_channels: int = 3, d_ch: int = 4) -> nn.Module:
    return UNetDiscriminator(in_channels=in_channels, d_ch=d_ch)
