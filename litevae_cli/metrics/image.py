"""Per-image PSNR and SSIM as batched torch functions, matched to scikit-image (the field's protocol).

Owns only the pixel metrics that `reconstruct` prints and `eval` averages:
  * `to_uint8(x)`: [-1,1] float -> uint8 (clamp, x*127.5+127.5, round to nearest), the quantisation
    a saved PNG goes through; PSNR is taken on these values.
  * `psnr_uint8(a, b)`: 10*log10(255^2 / MSE) per image over all pixels and channels, in float64,
    = `skimage.metrics.peak_signal_noise_ratio(a, b, data_range=255)`. Identical images (MSE = 0)
    would give +inf, which would poison a dataset mean: PSNR is capped at `PSNR_CAP_DB` = 100 dB.
  * `ssim(a, b)`: images in [0,1]; = `skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)`
    per image: an 11-tap Gaussian window (truncate 3.5), population covariance, K1=0.01, K2=0.03,
    the SSIM map averaged over pixels at least 5 px from the border (skimage crops that strip), then
    over channels.
Inputs are [N,C,H,W] (or one [C,H,W] image); outputs are float64 tensors [N] on the input's device.
Validated against scikit-image in tests/test_image_metrics.py (random and skimage.data images, 1e-4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0  # the value reported for identical images (MSE = 0)
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # skimage's value with gaussian_weights=True: an 11-tap window at sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _batched(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        return x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"expected [N,C,H,W] or [C,H,W], got shape {tuple(x.shape)}")
    return x


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _batched(a), _batched(b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def _metric_device(x: torch.Tensor) -> torch.device:
    # float64 is what makes these match skimage to 1e-4 in flat regions; MPS has no float64.
    return torch.device("cpu") if x.device.type == "mps" else x.device


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Map [-1,1] floats to uint8 the way a saved PNG would hold them: clamp, *127.5+127.5, round."""
    return (x.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5)).round().to(torch.uint8)


def psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB, peak 255) of uint8 images [N,C,H,W]; capped at PSNR_CAP_DB for MSE = 0."""
    a, b = _check_pair(a, b)
    if a.dtype != torch.uint8 or b.dtype != torch.uint8:
        raise ValueError(f"psnr_uint8 wants uint8 images, got {a.dtype} and {b.dtype} (use to_uint8)")
    dev = _metric_device(a)
    d = a.to(dev, torch.float64) - b.to(dev, torch.float64)
    mse = d.square().flatten(1).mean(1)
    psnr = 10.0 * torch.log10(255.0**2 / mse)  # inf where mse == 0
    return psnr.clamp(max=PSNR_CAP_DB)


def _gaussian_taps(sigma: float, truncate: float, dtype, device) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d's weights: radius int(truncate*sigma + 0.5), normalised."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every (image, channel) plane, 'valid' part only.

    skimage filters with mode='reflect' and then crops a (win-1)/2 border before averaging; the kept
    pixels' windows never reach the padding, so the valid convolution gives the same numbers."""
    n, c, h, w = x.shape
    planes = x.reshape(n * c, 1, h, w)
    k = taps.numel()
    planes = F.conv2d(planes, taps.view(1, 1, k, 1))
    planes = F.conv2d(planes, taps.view(1, 1, 1, k))
    return planes.view(n, c, h - k + 1, w - k + 1)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM of images [N,C,H,W] in [0, data_range], skimage-compatible (module docstring)."""
    a, b = _check_pair(a, b)
    dev = _metric_device(a)
    a, b = a.to(dev, torch.float64), b.to(dev, torch.float64)
    taps = _gaussian_taps(SSIM_SIGMA, SSIM_TRUNCATE, torch.float64, dev)
    if min(a.shape[-2:]) < taps.numel():
        raise ValueError(f"SSIM needs images of at least {taps.numel()}x{taps.numel()} px, got {tuple(a.shape[-2:])}")
    # One conv call for the five filtered maps (means, second moments, cross moment).
    stacked = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    ux, uy, uxx, uyy, uxy = _blur_valid(stacked, taps).chunk(5, dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population covariance (Wang et al. 2004)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)  # per channel, then over channels (skimage's channel_axis)
