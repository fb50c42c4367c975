"""Discriminators: parameter counts against the published sizes, the (logits, ...) tuple interface,
gradient flow on the tiny variants, and building through the registry."""

from __future__ import annotations

import pytest
import torch

from litevae_cli.models import discriminators as D


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "builder, expected, rel_tol",
    [
        (D.patchgan, 2.77e6, 0.01),
        (D.unet_disc_s, 2.75e6, 0.02),
        (D.unet_disc_m, 11.0e6, 0.02),
        (D.unet_disc_l, 44.1e6, 0.02),
    ],
    ids=["patchgan", "unet-disc-s", "unet-disc-m", "unet-disc-l"],
)
def test_param_counts(builder, expected, rel_tol):
    count = n_params(builder())
    assert abs(count - expected) / expected < rel_tol, f"{builder.__name__}: {count} params, want ~{expected:.3g}"


def test_unet_counts_scale_quadratically():
    # Only biases add a linear term: doubling D_ch multiplies the count by ~4.
    s, m = n_params(D.UNetDiscriminator(d_ch=8)), n_params(D.UNetDiscriminator(d_ch=16))
    assert m / s == pytest.approx(4.0, rel=0.01)


def _check_grads(model: torch.nn.Module, outputs: tuple[torch.Tensor, ...]) -> None:
    loss = sum(o.float().mean() for o in outputs)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def _tiny_forward(builder, heads: int):
    """A seeded tiny discriminator on a random batch of 2 at 64 px: (model, its tuple of `heads` logit maps)."""
    torch.manual_seed(0)
    model = builder()
    out = model(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert isinstance(out, tuple) and len(out) == heads
    return model, out


def test_patchgan_tiny_forward_backward():
    model, out = _tiny_forward(D.patchgan_tiny, heads=1)
    (logits,) = out
    assert logits.shape[:2] == (2, 1) and logits.ndim == 4
    assert logits.shape[-2:] == (14, 14)  # 64 -> 32 -> 16 -> 15 -> 14 with n_layers=2
    assert torch.isfinite(logits).all()
    _check_grads(model, out)


def test_patchgan_full_output_shape():
    out = D.patchgan()(torch.zeros(1, 3, 64, 64))
    assert out[0].shape == (1, 1, 6, 6)


def test_unet_tiny_forward_backward():
    model, out = _tiny_forward(D.unet_disc_tiny, heads=2)
    pixel, global_ = out
    assert pixel.shape == (2, 1, 64, 64)
    assert global_.shape == (2,)
    assert torch.isfinite(pixel).all() and torch.isfinite(global_).all()
    _check_grads(model, out)


@pytest.mark.parametrize("size", [(128, 128), (64, 192)])
def test_unet_tiny_other_sizes(size):
    with torch.no_grad():
        pixel, global_ = D.unet_disc_tiny().eval()(torch.zeros(1, 3, *size))
    assert pixel.shape == (1, 1, *size) and global_.shape == (1,)


def test_unet_rejects_bad_size():
    with pytest.raises(ValueError, match="multiples of 64"):
        D.unet_disc_tiny()(torch.zeros(1, 3, 96, 96))


def test_unet_s_forward_64():
    with torch.no_grad():
        pixel, global_ = D.unet_disc_s()(torch.zeros(2, 3, 64, 64))
    assert pixel.shape == (2, 1, 64, 64) and global_.shape == (2,)


def test_spectral_norm_on_every_unet_layer():
    model = D.unet_disc_tiny()
    weighted = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert weighted and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in weighted)


def test_builders_reject_unknown_kwargs():
    with pytest.raises(TypeError):
        D.patchgan(nfd=32)
    with pytest.raises(TypeError):
        D.unet_disc_s(d_ch=8)


def test_create_model_via_registry():
    from litevae_cli.models.registry import create_model, get_entry, list_models

    model = create_model("unet-disc-s")
    assert isinstance(model, D.UNetDiscriminator)
    assert n_params(model) == n_params(D.unet_disc_s())
    disc_names = set(list_models("discriminator"))
    assert {"patchgan", "gigagan", "unet-disc-s", "unet-disc-m", "unet-disc-l", "patchgan-tiny", "gigagan-tiny",
            "unet-disc-tiny"} <= disc_names
    assert get_entry("unet-disc-tiny").test_variant and not get_entry("unet-disc-l").test_variant
    assert "unet-disc-tiny" not in list_models("discriminator", include_test=False)
