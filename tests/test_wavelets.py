"""DWT/IDWT against PyWavelets (the oracle), round trips, dtype handling and odd-size errors."""

import numpy as np
import pytest
import pywt
import torch

from litevae_cli.models.wavelets import dwt2, idwt2, split_bands, wavedec2, waverec2

WAVELETS = [("haar", "symmetric"), ("haar", "periodization"), ("db2", "periodization"), ("sym4", "periodization")]


def _pywt_packed(x: np.ndarray, wavelet: str, mode: str) -> np.ndarray:
    ca, (ch, cv, cd) = pywt.dwt2(x, wavelet, mode=mode, axes=(-2, -1))
    n, c = x.shape[:2]
    return np.stack([ca, ch, cv, cd], axis=2).reshape(n, 4 * c, *ca.shape[-2:])


@pytest.mark.parametrize("wavelet,mode", WAVELETS)
def test_dwt2_matches_pywt(wavelet, mode):
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    ours = dwt2(x, wavelet).numpy()
    ref = _pywt_packed(x.double().numpy(), wavelet, mode)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-5


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym4"])
def test_idwt2_inverts_dwt2_and_matches_pywt(wavelet):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    coeffs = dwt2(x, wavelet)
    assert torch.allclose(idwt2(coeffs, wavelet), x, atol=1e-5)
    c = coeffs.view(2, 3, 4, 16, 16).double().numpy()
    ref = pywt.idwt2((c[:, :, 0], (c[:, :, 1], c[:, :, 2], c[:, :, 3])), wavelet, mode="periodization")
    assert np.abs(idwt2(coeffs, wavelet).numpy() - ref).max() <= 1e-5


@pytest.mark.parametrize("wavelet", ["haar", "db2"])
def test_wavedec2_matches_pywt_three_levels(wavelet):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = wavedec2(x, 3, wavelet)
    ref = pywt.wavedec2(x.double().numpy(), wavelet, mode="periodization", level=3, axes=(-2, -1))
    # pywt: [cA3, (details 3), (details 2), (details 1)]
    for level in (1, 2, 3):
        _approx, details = split_bands(ours[level - 1])
        ref_details = ref[4 - level]
        for band in range(3):
            assert np.abs(details[:, :, band].numpy() - ref_details[band]).max() <= 1e-5
    approx3, _ = split_bands(ours[2])
    assert np.abs(approx3.numpy() - ref[0]).max() <= 1e-5
    assert torch.allclose(waverec2(ours, wavelet), x, atol=1e-5)


def test_bf16_input_computes_in_float32():
    x = torch.randn(1, 3, 16, 16)
    out = dwt2(x.bfloat16())
    assert out.dtype == torch.float32
    assert torch.allclose(out, dwt2(x.bfloat16().float()), atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dwt2(x).dtype == torch.float32


def test_gradients_flow_and_match_adjoint():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    y = dwt2(x, "db2")
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # the transform is orthogonal, so its gradient (adjoint) is the inverse transform
    assert torch.allclose(x.grad, idwt2(g, "db2"), atol=1e-5)


def test_odd_sizes_are_a_clear_error():
    with pytest.raises(ValueError, match="even height and width"):
        dwt2(torch.randn(1, 3, 15, 16))


def test_non_orthogonal_wavelet_rejected():
    with pytest.raises(ValueError, match="not orthogonal"):
        dwt2(torch.randn(1, 1, 8, 8), "bior2.2")


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_haar_fast_path_equals_the_pywt_filter_conv(requires_grad, channels_last):
    # Haar runs the depthwise stride-2 conv in its separable butterfly form; it must be the same map as
    # the conv with PyWavelets' filter bank (the generic path every other wavelet takes).
    import torch.nn.functional as F

    from litevae_cli.models.wavelets import _weight

    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(requires_grad)
    weight, _ = _weight("haar", 3, x.device)
    conv = F.conv2d(x.detach(), weight, stride=2, groups=3)
    fast = dwt2(x, "haar")
    assert torch.allclose(fast, conv, atol=1e-6, rtol=0)
    if requires_grad:
        fast.square().sum().backward()
        assert torch.allclose(x.grad, 2 * idwt2(fast.detach(), "haar"), atol=1e-5)
