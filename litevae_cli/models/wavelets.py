"""Discrete wavelet transforms in torch: `dwt2`, `idwt2` and the multi-level `wavedec2`/`waverec2`.

LiteVAE's encoder front end (Sadat et al. 2024, Sec. 3) and its wavelet loss need a batched,
differentiable 2D DWT on any device. As torch-dwt does, each level is ONE depthwise stride-2
convolution with the four separable 2D filters of the wavelet, whose 1D filters come from
PyWavelets (`pywt.Wavelet(name).filter_bank`), imported only for a non-Haar wavelet: Haar's filters
are written out here (`_HAAR_BANK`, equal to pywt's), so the models and the losses need no PyWavelets
(issue 26: a GPU machine with only torch). PyWavelets stays the reference the tests compare against. The inverse is the exact adjoint of the analysis
operator (a transposed convolution followed by folding the periodic padding back), which equals
the inverse for orthogonal wavelets.

Haar (the encoder's and the wavelet loss's wavelet) evaluates that same 2x2 stride-2 depthwise conv
in its separable butterfly form (`_haar_level`): sums and differences of the pixels of each 2x2 block,
each product of the +-1/sqrt(2) filters being +-1/2. It is the same linear map (equal to the conv
within 1 ulp, to pywt within 1e-6) and about 2x faster on CPU, where mkldnn reorders the 3-channel
NCHW input and the output to its blocked layout (measured in BENCHMARKS.md). Other wavelets take the
conv path.

Conventions (checked against PyWavelets in tests/test_wavelets.py):
- Boundary handling is periodic, i.e. pywt's ``mode="periodization"``. For haar there is no boundary
  effect, so results equal pywt's default mode too. Every level halves H and W exactly.
- Odd spatial sizes are an error (a ValueError that names the size); pad or crop before.
- Sub-band order per input channel is pywt's: (cA, cH, cV, cD), i.e. the packed tensor of `dwt2`
  has 4*C channels laid out as ``[c0.A, c0.H, c0.V, c0.D, c1.A, ...]``.
- The computation runs in float32 with autocast off (inputs may be bf16/fp16); outputs are float32.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from litevae_cli.runtime import float32_region as _float32_region


_HAAR = ("haar", "db1")  # identical filter banks
_R = math.sqrt(0.5)  # 0.7071067811865476, bit-equal to pywt (1 / math.sqrt(2) is 1 ulp lower)
_HAAR_BANK = ((_R, _R), (-_R, _R))  # pywt.Wavelet("haar").filter_bank[:2]: (dec_lo, dec_hi)


def _bank_1d(wavelet: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(dec_lo, dec_hi) of an orthogonal wavelet: Haar's written out, any other from PyWavelets."""
    if wavelet in _HAAR:
        return _HAAR_BANK
    try:
        import pywt  # only here: Haar, the models' and losses' wavelet, needs no PyWavelets
    except ImportError as e:
        raise ImportError(f"wavelet {wavelet!r} needs PyWavelets (pip install pywavelets); Haar does not") from e
    w = pywt.Wavelet(wavelet)
    if not w.orthogonal:
        raise ValueError(f"wavelet {wavelet!r} is not orthogonal; only orthogonal wavelets are supported")
    return tuple(w.filter_bank[0]), tuple(w.filter_bank[1])


@functools.lru_cache(maxsize=None)
def _filters_2d(wavelet: str) -> tuple[torch.Tensor, int]:
    """The four 2D analysis filters [4, 1, L, L] (already flipped for cross-correlation) and L."""
    # device="cpu" explicitly: a first call under `with torch.device("meta")` (FLOP counting) must not
    # cache meta filters.
    dec_lo, dec_hi = (torch.tensor(f, dtype=torch.float64, device="cpu") for f in _bank_1d(wavelet))
    # pywt convolves (out[n] = sum_k h[k] x[2n+1-k]); conv2d cross-correlates, so flip the filters.
    lo, hi = dec_lo.flip(0), dec_hi.flip(0)
    # Band key: (filter along H, filter along W): A = (lo, lo), H = (hi, lo), V = (lo, hi), D = (hi, hi).
    bank = torch.stack([torch.outer(a, b) for a, b in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))])
    return bank.unsqueeze(1).to(torch.float32), len(dec_lo)


@functools.lru_cache(maxsize=64)
def _weight(wavelet: str, channels: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """The depthwise weight [4C, 1, L, L] on `device`, built once per (wavelet, C, device)."""
    bank, length = _filters_2d(wavelet)
    return bank.to(device).repeat(channels, 1, 1, 1), length


def _haar_level(x: torch.Tensor) -> torch.Tensor:
    """One Haar level of a float32 [N, C, H, W] tensor -> packed [N, 4C, H/2, W/2] (A, H, V, D per channel).

    With x00, x01, x10, x11 the four pixels of each 2x2 block (row, column parity), the 2x2 stride-2 conv
    with the filters of `_filters_2d` (lo = (1, 1)/sqrt 2; hi = (1, -1)/sqrt 2, pywt's dec_hi flipped for
    cross-correlation; band = (filter along H, filter along W)) is
        A = (x00 + x10 + x01 + x11) / 2,  H = (x00 - x10 + x01 - x11) / 2,
        V = (x00 + x10 - x01 - x11) / 2,  D = (x00 - x10 - x01 + x11) / 2.
    Pairing along H first: P0 = x00 + x10, P2 = x01 + x11 give A = lerp(P0, P2, 1/2) and V = A - P2;
    P1 = x00 - x10, P3 = x01 - x11 give H = lerp(P1, P3, 1/2) and D = H - P3. Without autograd the P's
    are written straight into the output planes and finished in place, so the only memory touched is
    the output (fresh buffers cost page faults on CPU). Works on strided inputs (a level's A band).
    Under torch.compile the functional form runs (the compiler plans the buffers itself).
    """
    n, c, h, w = x.shape
    q = x.view(n, c, h // 2, 2, w // 2, 2)
    # out= records no autograd, and torch.compile cannot trace out= into a strided view (a graph break):
    # both take the same math as fresh tensors, then stack.
    if (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling():
        x00, x01, x10, x11 = q[:, :, :, 0, :, 0], q[:, :, :, 0, :, 1], q[:, :, :, 1, :, 0], q[:, :, :, 1, :, 1]
        p2, p3 = x01 + x11, x01 - x11
        a, hh = torch.lerp(x00 + x10, p2, 0.5), torch.lerp(x00 - x10, p3, 0.5)
        return torch.stack([a, hh, a - p2, hh - p3], dim=2).reshape(n, 4 * c, h // 2, w // 2)
    y = torch.empty((n, c, 4, h // 2, w // 2), dtype=x.dtype, device=x.device)
    # Four ops per level (few parallel regions: they dominate on a busy 2-core machine). Rows 2i and 2i+1
    # of x, as [.., h/2, w/2, column parity], feed the planes (P0, P2) and (P1, P3) in one add and one sub.
    planes = y.view(n, c, 2, 2, h // 2, w // 2).permute(0, 1, 4, 5, 2, 3)  # [.., i, j, col parity, sum/diff]
    torch.add(q[:, :, :, 0], q[:, :, :, 1], out=planes[..., 0])  # P0 -> plane 0, P2 -> plane 2
    torch.sub(q[:, :, :, 0], q[:, :, :, 1], out=planes[..., 1])  # P1 -> plane 1, P3 -> plane 3
    even, odd = y[:, :, 0:2], y[:, :, 2:4]  # (P0, P1) and (P2, P3)
    torch.lerp(even, odd, 0.5, out=even)  # (A, H); elementwise in place: each element reads only its own inputs
    torch.sub(even, odd, out=odd)  # (V, D) = (A - P2, H - P3)
    return y.view(n, 4 * c, h // 2, w // 2)


def _check_even(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a 4D tensor [N, C, H, W], got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"dwt2 needs even height and width, got {h}x{w}: pad or crop the input first")


def dwt2(x: torch.Tensor, wavelet: str = "haar") -> torch.Tensor:
    """One-level 2D DWT: [N, C, H, W] -> [N, 4C, H/2, W/2] (bands A, H, V, D per channel)."""
    _check_even(x)
    channels = x.shape[1]
    with _float32_region(x.device):
        x = x.float()
        if wavelet in _HAAR:
            return _haar_level(x)
        weight, length = _weight(wavelet, channels, x.device)
        pad = length // 2 - 1  # periodization: total padding L-2, split evenly
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="circular")
        return F.conv2d(x, weight, stride=2, groups=channels)


def idwt2(coeffs: torch.Tensor, wavelet: str = "haar") -> torch.Tensor:
    """Inverse of `dwt2`: [N, 4C, h, w] -> [N, C, 2h, 2w]."""
    if coeffs.ndim != 4 or coeffs.shape[1] % 4:
        raise ValueError(f"expected [N, 4C, h, w] wavelet coefficients, got shape {tuple(coeffs.shape)}")
    channels = coeffs.shape[1] // 4
    with _float32_region(coeffs.device):
        coeffs = coeffs.float()
        weight, length = _weight(wavelet, channels, coeffs.device)
        y = F.conv_transpose2d(coeffs, weight, stride=2, groups=channels)
        pad = length // 2 - 1
        if pad:  # fold the periodic padding back onto the signal (adjoint of circular padding)
            y = y.clone()
            y[..., :, pad : 2 * pad] += y[..., :, -pad:]
            y[..., :, -2 * pad : -pad] += y[..., :, :pad]
            y = y[..., :, pad:-pad]
            y[..., pad : 2 * pad, :] += y[..., -pad:, :]
            y[..., -2 * pad : -pad, :] += y[..., :pad, :]
            y = y[..., pad:-pad, :]
        return y


def split_bands(coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split packed `dwt2` output into (approximation [N,C,h,w], details [N,C,3,h,w])."""
    n, c4, h, w = coeffs.shape
    bands = coeffs.view(n, c4 // 4, 4, h, w)
    return bands[:, :, 0], bands[:, :, 1:]


def wavedec2(x: torch.Tensor, levels: int, wavelet: str = "haar") -> list[torch.Tensor]:
    """Multi-level DWT: the packed [N, 4C, H/2^l, W/2^l] coefficients of levels 1..levels.

    Level l is the DWT of level l-1's approximation, as in pywt.wavedec2.
    """
    out = []
    approx = x
    for _ in range(levels):
        coeffs = dwt2(approx, wavelet)
        out.append(coeffs)
        approx, _details = split_bands(coeffs)
    return out


def waverec2(levels: list[torch.Tensor], wavelet: str = "haar") -> torch.Tensor:
    """Inverse of `wavedec2`: only the deepest level's approximation and every level's details are used."""
    approx = None
    for coeffs in reversed(levels):
        if approx is not None:
            n, c4, h, w = coeffs.shape
            bands = coeffs.view(n, c4 // 4, 4, h, w).clone()
            bands[:, :, 0] = approx
            coeffs = bands.view(n, c4, h, w)
        approx = idwt2(coeffs, wavelet)
    return approx
