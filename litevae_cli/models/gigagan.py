"""The GigaGAN discriminator (Kang et al., CVPR 2023, "Scaling up GANs for Text-to-Image Synthesis",
Sec. 3.3) as open-LiteVAE configures it for its B2 run (C_base 4096, C_max 256, 2 conv blocks a level,
attention at 16 and 8 px): the fourth discriminator family of open-LiteVAE (RGenDiff/open-litevae,
`olvae/modules/gigagan/`), written here from the paper and that configuration.

This module owns the network and its registered builders (`gigagan`, `gigagan-tiny`):

- Multi-scale input (MS-I): the image pyramid x_l (2x2 average pooling) enters every level l through its
  own 3x3 "fromRGB" conv, added to the trunk's features of the same size.
- Trunk: per level, a 4x4 stride-2 conv to C_l = min(C_base / r_l, C_max) channels (r_l: the level's
  output side at the design resolution), `n_blocks` 3x3 convs, and at 16 and 8 px `depth` transformer
  blocks of L2-distance self-attention with tied query/key weights (GigaGAN Sec. 3.3, after Kim et al.
  2021, "The Lipschitz constant of self-attention") and a GEGLU feed-forward. Convs are spectrally
  normalised, with LeakyReLU 0.1 in the trunk and 0.2 in the predictors, as in the reference.
- Multi-scale output (MS-O): a predictor per level, D_l(x) = psi_l(h_l) + conv1x1(h_l) (the paper's
  predictor plus its unconditional 1x1 term), and a global level: the last 4x4 map through a 2x2
  stride-2 conv, flattened to 4 C_max features, and its own predictor (one logit per image).
- Sample-adaptive filter banks (GigaGAN Sec. 3.1, there in the generator; the reference puts its
  adaptive convs in the predictors, as here): each predictor layer is a 1x1 convolution whose kernel is
  a softmax-weighted mixture of `banks` kernels, then modulated and demodulated (StyleGAN2).

Logits and their reduction: `forward` returns one head, `(logits [N, L],)`: every level's logit map
flattened and concatenated (L = 128^2 + 64^2 + ... + 4^2 + 1 = 21841 at 256 px). The reference returns
the same concatenation (`flatten_outputs=True`) and its GAN losses take one mean over it, so each logit
counts once: the 128x128 level carries 75 % of the loss. `training/losses.py` means over a head's
elements, so this is the reference's reduction exactly. `levels_logits(x)` gives the maps one by one.

Deviations from open-LiteVAE (and from GigaGAN), each for a stated reason:
- Levels are relative to the input: any side >= 2^levels runs every parameter, so a 128 px crop trains
  all of them (DDP without unused parameters); the reference starts a 128 px image at its second level
  (leaving the first unused) and feeds the image to one level only, where GigaGAN feeds every scale
  (our pyramid) and runs the trunk once per input scale (we run it once, the inputs summed in).
  The global level resamples the last map to 4x4 (adaptive average pooling; the identity at 256 px).
- No BatchNorm (the reference has it after every conv; GigaGAN has none): spectral norm alone.
  BatchNorm fails on the global level's 1x1 map at batch 1 and ties one image's logit to its batch.
- Unconditional: GigaGAN selects kernels by its style vector and modulates the predictors by the text
  embedding; the reference's adaptive convs take an embedding that its forward passes empty. Our style
  is the predictor input's spatial mean, so the kernels adapt to the sample.
- Filter banks of 2 kernels in 3-layer predictors (the reference: 1 kernel, 4 layers), which brings the
  size to the reference's; the global predictor narrows 4 C_max -> C_max and takes the 2x2 map's mean
  as its style. The attention's residual has gain 1 (the reference: 0.5 on the input).
- Convs pad 1, so sides halve exactly (128 ... 4); the reference pads 2 (129 ... 5), one pixel more on
  every map, which is most of why we count 4 % fewer MACs.
Sizes at 256 px (`litevae models`, `tests/test_gigagan.py`): 14.39 M parameters (the reference's 14.38 M)
and 3.11 G MACs = 6.21 GFLOP (its 3.23 G MACs).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from litevae_cli.models.layers import group_norm
from litevae_cli.models.registry import register_model
from litevae_cli.runtime import float32_region

TRUNK_SLOPE, PREDICTOR_SLOPE = 0.1, 0.2  # LeakyReLU slopes, as the reference


def _sn_conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding))


# --------------------------------------------------------------------------------------------
# Attention: L2-distance self-attention with tied query/key (GigaGAN Sec. 3.3; Kim et al. 2021)
# --------------------------------------------------------------------------------------------


class L2SelfAttention(nn.Module):
    """softmax_j(-||q_i - q_j||^2 / sqrt(d)) v_j with keys = queries (one tied projection), per head.

    -||q_i - q_j||^2 = 2 q_i.q_j - |q_j|^2 - |q_i|^2, and |q_i|^2 is constant along the softmax axis, so
    it is dropped. The distances and the softmax run in float32 under autocast, as in the reference.
    """

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            raise ValueError(f"{channels} channels do not split into {self.heads} heads")
        self.qk = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, v = (proj(x).view(n, t, self.heads, -1).transpose(1, 2) for proj in (self.qk, self.v))
        with float32_region(x.device):
            q, v = q.float(), v.float()
            logits = 2 * q @ q.transpose(-1, -2) - q.square().sum(-1).unsqueeze(-2)
            h = (logits / math.sqrt(q.shape[-1])).softmax(-1) @ v
        return self.out(h.transpose(1, 2).reshape(n, t, c))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + GEGLU-FF(LN(x)) (4x inner width, Shazeer 2020)."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attn = L2SelfAttention(channels, head_dim)
        self.ff_in = nn.Linear(channels, 8 * channels)
        self.ff_out = nn.Linear(4 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        a, gate = self.ff_in(self.norm2(x)).chunk(2, dim=-1)
        return x + self.ff_out(a * F.gelu(gate))


class SpatialTransformer(nn.Module):
    """x + proj_out(blocks(proj_in(GroupNorm(x)))), the pixels of the map as tokens (the LDM layout the
    reference uses, with linear projections and `depth` TransformerBlocks)."""

    def __init__(self, channels: int, head_dim: int, depth: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.proj_in, self.proj_out = nn.Linear(channels, channels), nn.Linear(channels, channels)
        self.blocks = nn.Sequential(*(TransformerBlock(channels, head_dim) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        return x + self.proj_out(self.blocks(tokens)).transpose(1, 2).reshape(n, c, h, w)


# --------------------------------------------------------------------------------------------
# Predictors: sample-adaptive filter-bank 1x1 convolutions (GigaGAN Sec. 3.1)
# --------------------------------------------------------------------------------------------


class FilterBankConv1x1(nn.Module):
    """1x1 conv with a per-sample kernel (GigaGAN Sec. 3.1, sample-adaptive kernel selection):

    K = sum_k softmax(W_filter s + b_filter)_k K_k over `banks` kernels; then StyleGAN2's modulation
    K[o, i] *= a_i(s) and demodulation K[o, i] /= sqrt(sum_i K[o, i]^2 + eps) (Karras et al. 2020, Eq. 1, 3).
    s is the sample's style vector. The kernels are built in float32; the conv is one batched matmul.
    """

    def __init__(self, cin: int, cout: int, style_dim: int, banks: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.kernels = nn.Parameter(torch.randn(banks, cout, cin) / math.sqrt(cin))
        self.select = nn.Linear(style_dim, banks)
        self.affine = nn.Linear(style_dim, cin)  # modulation a(s), bias 1 (StyleGAN2)
        nn.init.ones_(self.affine.bias)
        self.bias = nn.Parameter(torch.zeros(cout))

    def sample_kernels(self, style: torch.Tensor) -> torch.Tensor:
        """[N, cout, cin] kernels for styles [N, style_dim]."""
        with float32_region(style.device):
            style = style.float()
            mix = torch.einsum("nk,koi->noi", self.select(style).softmax(-1), self.kernels)
            w = mix * self.affine(style).unsqueeze(1)
            return w * torch.rsqrt(w.square().sum(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        out = torch.bmm(self.sample_kernels(style).to(x.dtype), x.reshape(n, c, h * w))
        return out.view(n, -1, h, w) + self.bias.view(1, -1, 1, 1).to(out.dtype)


class Predictor(nn.Module):
    """psi(h) + conv1x1(h): `layers` FilterBankConv1x1 + LeakyReLU then a 1x1 conv to one logit, plus the
    unconditional 1x1 term (GigaGAN Sec. 3.3). The style defaults to h's spatial mean."""

    def __init__(self, cin: int, width: int, layers: int, banks: int, style_dim: int | None = None):
        super().__init__()
        style_dim = style_dim or cin
        self.convs = nn.ModuleList(
            FilterBankConv1x1(cin if i == 0 else width, width, style_dim, banks) for i in range(layers)
        )
        self.to_logit = _sn_conv(width, 1, 1)
        self.skip = _sn_conv(cin, 1, 1)

    def forward(self, h: torch.Tensor, style: torch.Tensor | None = None) -> torch.Tensor:
        style = h.mean(dim=(2, 3)) if style is None else style
        y = h
        for conv in self.convs:
            y = F.leaky_relu(conv(y, style), PREDICTOR_SLOPE)
        return self.to_logit(y) + self.skip(h)


# --------------------------------------------------------------------------------------------
# The discriminator
# --------------------------------------------------------------------------------------------


class Level(nn.Module):
    """One trunk level: fromRGB for the pyramid image, 4x4 stride-2 conv, `n_blocks` 3x3 convs, attention."""

    def __init__(self, cin: int, cout: int, n_blocks: int, attention: bool, head_dim: int, depth: int):
        super().__init__()
        self.from_rgb = _sn_conv(3, cin, 3, padding=1)
        convs = [_sn_conv(cin, cout, 4, stride=2, padding=1)] + [
            _sn_conv(cout, cout, 3, padding=1) for _ in range(n_blocks)
        ]
        self.convs = nn.ModuleList(convs)
        self.attention = SpatialTransformer(cout, head_dim, depth) if attention else None

    def forward(self, h: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
        rgb = F.leaky_relu(self.from_rgb(image), TRUNK_SLOPE)
        h = rgb if h is None else h + rgb
        for conv in self.convs:
            h = F.leaky_relu(conv(h), TRUNK_SLOPE)
        return h if self.attention is None else self.attention(h)


class GigaGANDiscriminator(nn.Module):
    """Multi-scale-input, multi-scale-output GigaGAN discriminator (see the module docstring).

    `image_size` is the design resolution: it fixes the number of levels (log2(image_size) - 2, the last
    one 4x4) and which levels have attention (`attn_resolutions`, output sides at that resolution).
    Other input sizes run the same levels (relative scales); sides must be at least 2^levels.
    """

    def __init__(self, image_size: int = 256, c_base: int = 4096, c_max: int = 256, n_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16, 8), head_dim: int = 64, depth: int = 2,
                 pred_layers: int = 3, banks: int = 2):
        super().__init__()
        n_levels = int(math.log2(image_size)) - 2
        if n_levels < 1 or 2 ** (n_levels + 2) != image_size:
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        sides = [image_size >> (level + 1) for level in range(n_levels)]
        channels = [min(c_base // side, c_max) for side in sides]
        if min(channels) < 1:
            raise ValueError(f"c_base {c_base} gives no channels at {image_size // 2} px")
        self.min_side = 2**n_levels
        self.levels = nn.ModuleList(
            Level(channels[max(i - 1, 0)], channels[i], n_blocks, sides[i] in attn_resolutions, head_dim, depth)
            for i in range(n_levels)
        )
        self.predictors = nn.ModuleList(Predictor(c, c, pred_layers, banks) for c in channels)
        c_last = min(c_base // 2, c_max)  # the global level's 2x2 map at the design resolution
        self.to_global = _sn_conv(channels[-1], c_last, 2, stride=2)
        self.global_predictor = Predictor(4 * c_last, c_last, pred_layers, banks, style_dim=c_last)

    def levels_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logit maps [N, 1, h_l, w_l], finest level first, then the global [N, 1, 1, 1]."""
        if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < self.min_side:
            raise ValueError(f"GigaGANDiscriminator needs [N, 3, H, W] with sides >= {self.min_side}, "
                             f"got {tuple(x.shape)}")
        logits, h, image = [], None, x
        for i, (level, predictor) in enumerate(zip(self.levels, self.predictors)):
            if i > 0:
                image = F.avg_pool2d(image, 2)  # the pyramid: x_l at the size of h
            h = level(h, image)
            logits.append(predictor(h))
        g = F.leaky_relu(self.to_global(F.adaptive_avg_pool2d(h, 4)), TRUNK_SLOPE)  # [N, C, 2, 2]
        logits.append(self.global_predictor(g.flatten(1)[:, :, None, None], style=g.mean(dim=(2, 3))))
        return logits

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.cat([logit.flatten(1) for logit in self.levels_logits(x)], dim=1),)


# --------------------------------------------------------------------------------------------
# Registered builders
# --------------------------------------------------------------------------------------------


@register_model("gigagan", kind="discriminator",
                description="GigaGAN (Kang 2023), C_base 4096, C_max 256, attn 16/8 px, 14.38 M")
def gigagan(banks: int = 2, pred_layers: int = 3) -> nn.Module:
    return GigaGANDiscriminator(image_size=256, c_base=4096, c_max=256, n_blocks=2, attn_resolutions=(16, 8),
                                head_dim=64, depth=2, pred_layers=pred_layers, banks=banks)


@register_model("gigagan-tiny", kind="discriminator",
                description="GigaGAN, 4 levels, C_max 16, attn 8 px (tests)", test_variant=True)
def gigagan_tiny(banks: int = 2, pred_layers: int = 2) -> nn.Module:
    return GigaGANDiscriminator(image_size=64, c_base=128, c_max=16, n_blocks=1, attn_resolutions=(8,),
                                head_dim=8, depth=1, pred_layers=pred_layers, banks=banks)
