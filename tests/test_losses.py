"""Tests for litevae_cli.training.losses: each term against a direct reference computation, and GeneratorLoss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import pywt
import torch
from scipy import ndimage

from litevae_cli.config import LossCfg
from litevae_cli.errors import UserError
from litevae_cli.training.losses import (GeneratorLoss, adversarial_g_loss, discriminator_loss, gaussian_loss, kl_loss,
                                l1_loss, wavelet_loss)
from litevae_cli.models.posterior import DiagonalGaussian


def _pair(seed: int = 0, shape=(2, 3, 16, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 2 - 1
    return x, (x + 0.3 * torch.randn(shape, generator=g)).clamp(-1, 1)


def test_l1():
    x, y = _pair()
    assert l1_loss(x, y).item() == pytest.approx(np.abs(x.numpy() - y.numpy()).mean(), rel=1e-6)


def test_wavelet_against_pywt():
    x, y = _pair(1)
    eps = 1e-3
    vals = []
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            _, hi = pywt.dwt2(x[n, c].double().numpy(), "haar")
            _, hi_hat = pywt.dwt2(y[n, c].double().numpy(), "haar")
            for a, b in zip(hi, hi_hat):  # (H, V, D), scaled by 1/2 as P App. G
                vals.append(np.sqrt((a / 2 - b / 2) ** 2 + eps**2))
    ref = np.mean(np.stack(vals))
    assert wavelet_loss(x, y, eps).item() == pytest.approx(ref, rel=1e-5)
    # Identical images: the Charbonnier floor eps; the low band (A) does not enter the loss.
    assert wavelet_loss(x, x).item() == pytest.approx(eps, rel=1e-4)
    assert wavelet_loss(x, x + 0.5).item() == pytest.approx(eps, rel=1e-3)


def test_gaussian_against_scipy():
    x, y = _pair(2)
    # 5x5, sigma 1 -> radius 2 = truncate * sigma; torch 'reflect' padding is scipy's 'mirror'.
    blur = lambda a: ndimage.gaussian_filter(a, sigma=(0, 0, 1.0, 1.0), truncate=2.0, mode="mirror")
    xn, yn = x.double().numpy(), y.double().numpy()
    ref = np.abs((xn - blur(xn)) - (yn - blur(yn))).mean()
    assert gaussian_loss(x, y).item() == pytest.approx(ref, rel=1e-5)
    assert gaussian_loss(x, x + 0.5).item() == pytest.approx(0.0, abs=1e-6)  # a constant shift is low-pass


def test_kl_closed_form():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    post = DiagonalGaussian(torch.cat([mu, logvar], 1))
    ref = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).mean()
    assert kl_loss(post).item() == pytest.approx(ref.item(), rel=1e-6)
    assert kl_loss(DiagonalGaussian(torch.zeros(1, 8, 2, 2))).item() == pytest.approx(0.0, abs=1e-7)


def test_adversarial_hand_values():
    real = (torch.tensor([[0.5, 2.0]]), torch.tensor([-1.0]))  # two heads, as the U-Net discriminator
    fake = (torch.tensor([[-2.0, 0.0]]), torch.tensor([3.0]))
    # hinge D: head 1: relu(1-r) = (0.5, 0) -> 0.25, relu(1+f) = (0, 1) -> 0.5; head 2: 2 + 4 = 6
    loss, terms = discriminator_loss(real, fake, "hinge")
    assert loss.item() == pytest.approx((0.75 + 6.0) / 2)
    assert terms["real"].item() == pytest.approx((0.25 + 2.0) / 2)
    assert terms["fake"].item() == pytest.approx((0.5 + 4.0) / 2)
    assert terms["total"].item() == pytest.approx(loss.item())
    # hinge G: -mean(f) per head: 1.0 and -3.0
    assert adversarial_g_loss(fake, "hinge").item() == pytest.approx((1.0 - 3.0) / 2)
    sp = lambda v: float(np.log1p(np.exp(v)))
    ns_d = ((sp(-0.5) + sp(-2.0)) / 2 + (sp(-2.0) + sp(0.0)) / 2 + sp(1.0) + sp(3.0)) / 2
    assert discriminator_loss(real, fake, "non-saturating")[0].item() == pytest.approx(ns_d, rel=1e-6)
    ns_g = ((sp(2.0) + sp(0.0)) / 2 + sp(-3.0)) / 2
    assert adversarial_g_loss(fake, "non-saturating").item() == pytest.approx(ns_g, rel=1e-6)
    with pytest.raises(UserError):
        adversarial_g_loss(fake, "wasserstein")


def test_losses_run_in_fp32_under_autocast():
    x, y = _pair(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for fn in (l1_loss, wavelet_loss, gaussian_loss):
            out = fn(x.bfloat16(), y.bfloat16())
            assert out.dtype == torch.float32
            assert out.item() == pytest.approx(fn(x.bfloat16().float(), y.bfloat16().float()).item(), rel=1e-6)


def _cfg(**weights) -> LossCfg:
    return dataclasses.replace(LossCfg(), **weights)


def test_generator_loss_weights_and_grads():
    x, y = _pair(5, (2, 3, 32, 32))
    x_hat = y.clone().requires_grad_(True)
    moments = torch.randn(2, 8, 4, 4, requires_grad=True)
    post = DiagonalGaussian(moments)
    fake = (torch.randn(2, 1, 32, 32), torch.randn(2))
    cfg = _cfg(l1=1.0, lpips=0.7, kl=0.01, wavelet=1.0, gaussian=0.5, adversarial=0.1)
    loss_fn = GeneratorLoss(cfg, "hinge", lpips_random_backbone=True).train()
    assert not loss_fn.lpips.training  # LPIPS dropout stays off
    total, terms = loss_fn(x, x_hat, post, fake_logits=fake)
    assert set(terms) == {"l1", "lpips", "kl", "wavelet", "gaussian", "adv", "total"}
    expected = (terms["l1"] + 0.7 * terms["lpips"] + 0.01 * terms["kl"] + terms["wavelet"]
                + 0.5 * terms["gaussian"] + 0.1 * terms["adv"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["adv"].item() == pytest.approx(adversarial_g_loss(fake).item())
    assert all(not t.requires_grad for t in terms.values())
    total.backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    assert moments.grad is not None and torch.isfinite(moments.grad).all()
    # adv_weight overrides the preset weight; no fake logits -> adv is 0.
    total2, _ = loss_fn(x, y, DiagonalGaussian(moments.detach()), fake_logits=fake, adv_weight=1.0)
    assert total2.item() == pytest.approx((expected + 0.9 * terms["adv"]).item(), rel=1e-5)
    _, terms3 = loss_fn(x, y, DiagonalGaussian(moments.detach()))
    assert terms3["adv"].item() == 0.0


def test_zero_weights_are_skipped_and_reported():
    x, y = _pair(6)
    loss_fn = GeneratorLoss(_cfg(lpips=0.0, wavelet=0.0, gaussian=0.0))
    assert loss_fn.lpips is None  # not built
    total, terms = loss_fn(x, y, DiagonalGaussian(torch.zeros(2, 8, 2, 2)))
    assert terms["lpips"].item() == terms["wavelet"].item() == terms["gaussian"].item() == 0.0
    assert total.item() == pytest.approx(l1_loss(x, y).item(), rel=1e-6)


def test_missing_lpips_backbone_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match="alexnet-owt-7be5be79.pth"):
        GeneratorLoss(_cfg(lpips=1.0, lpips_net="alex"))
