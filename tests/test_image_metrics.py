"""PSNR / SSIM in litevae_cli.metrics.image agree with scikit-image to 1e-4 (random and real images)."""

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from litevae_cli.metrics.image import PSNR_CAP_DB, psnr_uint8, ssim, to_uint8


def _sk_ssim(a_hwc, b_hwc):
    return structural_similarity(a_hwc, b_hwc, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=-1)


def _nchw(*imgs_hwc):
    return torch.from_numpy(np.stack(imgs_hwc)).permute(0, 3, 1, 2)


def _real_pairs():
    """Real photos (skimage.data) and a degraded copy of each: noise + a quantised blur-like shift."""
    rng = np.random.default_rng(0)
    out = []
    for img in (skdata.astronaut()[:96, :128], skdata.coffee()[100:180, 200:300], skdata.chelsea()[:64, :64]):
        noisy = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        out.append((img, noisy))
    return out


def test_psnr_matches_skimage_random_and_real():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 40, 52, 3), dtype=np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    got = psnr_uint8(_nchw(*a), _nchw(*b))
    want = [peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)]
    assert got.shape == (3,) and np.allclose(got.numpy(), want, atol=1e-4)
    for x, y in _real_pairs():
        assert abs(float(psnr_uint8(_nchw(x), _nchw(y))[0]) - peak_signal_noise_ratio(x, y, data_range=255)) < 1e-4


def test_psnr_of_identical_images_is_capped():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    y = x.clone()
    y[1, 0, 0, 0] ^= 1
    got = psnr_uint8(x, y)
    assert got[0] == PSNR_CAP_DB and torch.isfinite(got).all() and got[1] < PSNR_CAP_DB
    with pytest.raises(ValueError, match="uint8"):
        psnr_uint8(x.float(), y.float())


def test_ssim_matches_skimage_random_and_real():
    rng = np.random.default_rng(2)
    a = rng.random((2, 33, 47, 3))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    got = ssim(_nchw(*a), _nchw(*b))
    want = [_sk_ssim(x, y) for x, y in zip(a, b)]
    assert np.allclose(got.numpy(), want, atol=1e-4)
    for x, y in _real_pairs():
        xf, yf = x / 255.0, y / 255.0
        assert abs(float(ssim(_nchw(xf), _nchw(yf))[0]) - _sk_ssim(xf, yf)) < 1e-4
    # float32 input is computed in float64 internally: same answer
    xf, yf = (p.astype(np.float32) / 255 for p in _real_pairs()[0])
    assert abs(float(ssim(_nchw(xf), _nchw(yf))[0]) - _sk_ssim(xf.astype(np.float64), yf.astype(np.float64))) < 1e-4


def test_ssim_identity_and_single_image():
    x = torch.rand(3, 20, 20)
    assert torch.allclose(ssim(x, x), torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(1, 3, 8, 30), torch.rand(1, 3, 8, 30))


def test_to_uint8_quantisation():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, -1 + 2 / 255])
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255, 1]
    img = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(to_uint8(img.float() / 127.5 - 1), img)  # PNG -> [-1,1] -> uint8 is lossless
