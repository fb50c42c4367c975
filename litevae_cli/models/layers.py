"""Reusable blocks shared by the encoders and decoders: group norm, ResBlocks, SMC, attention, resampling.

- `SMConv2d` is the self-modulated convolution of LiteVAE (Sadat et al. 2024, Eq. 3), which replaces
  every GroupNorm+Conv pair of the decoder.
- `ResBlock` is the ADM/SD-VAE residual block (GroupNorm -> SiLU -> conv3 -> GroupNorm -> SiLU ->
  dropout -> conv3, 1x1 skip when channels change).
- `SMCResBlock` is the paper's `ResBlockWithSMC` (P App. G): pre-activation SiLU -> SMC -> SiLU ->
  dropout -> SMC, plus the skip, so the residual branch ends in a convolution (not in SiLU).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with gcd(32, channels) groups: 32 where it divides, else the largest divisor of 32 that
    does (16 channels -> 16 groups), since the S-scale encoder's 16-wide layers cannot take 32 groups."""
    return nn.GroupNorm(math.gcd(max_groups, channels), channels, eps=1e-6)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def silu_(h: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient flows through h (inference): same values, one allocation less.

    Fresh allocations are what these wide-activation nets pay most for on CPU (page faults on every new
    large buffer; see BENCHMARKS.md), so the eval path reuses buffers it owns. Only call it on a tensor
    the caller created (a norm or conv output), never on a block's input.
    """
    return F.silu(h, inplace=not h.requires_grad)


def residual_add(h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """skip + h, accumulated into h (which the caller owns) when no gradient flows and dtypes agree.

    IEEE addition is commutative, so the in-place form gives bit-identical values. Under torch.compile it
    is the plain sum (`torch.result_type` is a graph break there, and the compiler plans buffers itself).
    """
    if torch.compiler.is_compiling():
        return skip + h
    if h.requires_grad or skip.requires_grad or torch.result_type(h, skip) != h.dtype or h.shape != skip.shape:
        return skip + h
    return h.add_(skip)


class ResBlock(nn.Module):
    """ADM / SD-VAE residual block without time embedding (used by the encoders and the SD-VAE decoder).
    `groups`: GroupNorm groups at most (diffusers' `norm_num_groups`; see `group_norm`)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = conv3x3(cin, cout)
        self.norm2 = group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(cout, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One step per line so each intermediate is released as soon as the next exists (inference peak).
        h = silu_(self.norm1(x))
        h = self.conv1(h)
        h = silu_(self.norm2(h))
        h = self.conv2(self.dropout(h))
        return residual_add(h, self.skip(x))


class SMConv2d(nn.Module):
    """Self-modulated convolution (LiteVAE Eq. 3).

    w'[o,i,k] = g * s_i * w[o,i,k] / sqrt(sum_{i,k} (s_i * w[o,i,k])^2 + eps), with learned
    per-input-channel scales s (init 1), a learned scalar gain g (init 1) and the conv bias. s does not
    depend on the sample, so the weight is modulated and demodulated once per forward and a single
    ordinary convolution runs (no per-sample grouped conv as in StyleGAN2).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, eps: float = 1e-8):
        super().__init__()
        self.padding = kernel_size // 2
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = nn.Parameter(torch.ones(cin))  # s, per input channel
        self.gain = nn.Parameter(torch.ones(()))  # g
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def modulated_weight(self) -> torch.Tensor:
        # Eq. 3 in three passes over the weight (modulate; one norm reduction; scale), the last in place when
        # no gradient flows: it is recomputed every forward (53 M weights in the SMC decoder), and the naive
        # form (square, sum, two more multiplies) cost ~4x as much. The ops are float32 under autocast.
        w = self.weight * self.scale.view(1, -1, 1, 1)
        norm = torch.linalg.vector_norm(w, dim=(1, 2, 3), keepdim=True)  # [O, 1, 1, 1]
        factor = self.gain * torch.rsqrt(norm.square() + self.eps)
        return w * factor if w.requires_grad else w.mul_(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Under autocast, conv2d casts the (fp32-computed) modulated weight to the compute dtype.
        return F.conv2d(x, self.modulated_weight(), self.bias, padding=self.padding)


class SMCResBlock(nn.Module):
    """`ResBlockWithSMC` of P App. G: h = SMC_2(dropout(SiLU(SMC_1(SiLU(x))))), output skip(x) + h.

    The GroupNorm ResBlock with each GroupNorm+conv pair replaced by one SMC: pre-activation, so the
    branch ends in a conv and can add negative values to the residual stream (open-LiteVAE's earlier
    SMC -> SiLU -> SMC -> SiLU ended in SiLU, whose output is bounded below by -0.278, and the stream
    drifted positive over the decoder's 15 blocks). 1x1 conv skip when the channel count changes.
    """

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = SMConv2d(cin, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = SMConv2d(cout, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(x))  # never in place: x is the block's input and feeds the skip
        h = self.conv2(self.dropout(silu_(h)))
        return residual_add(h, self.skip(x))


class AttnBlock(nn.Module):
    """SD-VAE's single-head spatial self-attention (GroupNorm, 1x1 q/k/v/proj), used at the mid block."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (t(y).flatten(2).transpose(1, 2).unsqueeze(1) for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(n, c, h, w)
        return x + self.proj_out(out)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a plain 3x3 conv (SD-VAE; kept plain in the SMC decoder)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
    """SD-VAE's downsample: pad right/bottom by one, then a 3x3 stride-2 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))
