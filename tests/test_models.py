"""Every registered model: forward/backward on CPU (tiny variants at small size), shapes, gradients,
parameter counts against the paper, and the registry/autoencoder API."""

from pathlib import Path

import pytest
import torch

import litevae_cli
from litevae_cli.models import build_autoencoder, create_model, get_entry, list_models
from litevae_cli.models.complexity import count_params

PAPER_ENCODER_PARAMS = {"litevae-s": 1.03e6, "litevae-b": 6.75e6, "litevae-m": 32.75e6, "litevae-l": 41.42e6}
REQUIRED = {
    "encoder": ["litevae-s", "litevae-b", "litevae-m", "litevae-l", "sd-vae-encoder"],
    "decoder": ["smc-decoder", "sd-vae-decoder"],
    "discriminator": ["patchgan", "gigagan", "unet-disc-s", "unet-disc-m", "unet-disc-l"],
}
# Full-size models that are cheap enough to run forward+backward at 64x64 on CPU.
SMALL_FULL_SIZE = ["litevae-s", "litevae-b", "patchgan", "gigagan", "unet-disc-s"]


def test_required_names_are_registered_with_their_kind():
    for kind, names in REQUIRED.items():
        for name in names:
            assert get_entry(name).kind == kind
            assert name in list_models(kind)
    assert "litevae-tiny" in list_models() and "litevae-tiny" not in list_models(include_test=False)


@pytest.mark.parametrize("name", list(PAPER_ENCODER_PARAMS))
@pytest.mark.parametrize("nz", [4, 12])
def test_litevae_encoder_params_within_2_percent_of_paper(name, nz):
    with torch.device("meta"):
        n = count_params(create_model(name, nz=nz))
    assert abs(n / PAPER_ENCODER_PARAMS[name] - 1) < (0.01 if nz == 4 else 0.02), n


@pytest.mark.parametrize("name,nz,expected", [("sd-vae-encoder", 4, 34.16e6), ("sd-vae-decoder", 4, 49.49e6)])
def test_baseline_and_decoder_params(name, nz, expected):
    with torch.device("meta"):
        n = count_params(create_model(name, nz=nz))
    assert abs(n / expected - 1) < 0.005, n


def _readme_model_table() -> dict[str, tuple[float, float]]:
    """name -> (params in M, GFLOPs@256) from the README's model table."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in list_models():
            rows[cells[0]] = (float(cells[2].split()[0]), float(cells[4]))
    return rows


def test_readme_model_table_matches_the_registry():
    from litevae_cli.models.complexity import model_complexity

    rows = _readme_model_table()  # registry defaults: nz=12
    assert set(rows) == set(list_models(include_test=False))
    for name, (params_m, gflops) in rows.items():
        measured = model_complexity(name, 256)
        assert (round(measured["params"] / 1e6, 2), round(measured["gflops_256"], 1)) == (params_m, gflops), name


def test_smc_decoder_follows_app_g():
    from litevae_cli.models.layers import AttnBlock, SMConv2d, SMCResBlock

    with torch.device("meta"):
        dec = create_model("smc-decoder", nz=12)
    assert [type(m) for m in dec.mid] == [SMCResBlock, SMCResBlock]  # App. G MidBlock2D: 2 ResBlocks
    assert not any(isinstance(m, (AttnBlock, torch.nn.GroupNorm)) for m in dec.modules())
    assert isinstance(dec.norm_out, torch.nn.Identity) and isinstance(dec.conv_out, SMConv2d)  # SiLU -> SMC
    assert dec.conv_out.weight.shape[:2] == (3, 128)


def test_encoder_unet_heads_are_bare_convs():
    with torch.device("meta"):
        enc = create_model("litevae-b", nz=12)
    for unet in [*enc.extractors, enc.aggregator]:
        assert not hasattr(unet, "norm_out") and isinstance(unet.conv_out, torch.nn.Conv2d)


def _forward_backward(name: str, size: int = 64, device: str = "cpu"):
    """Also run on CUDA by tests/test_gpu.py for every registered model."""
    torch.manual_seed(0)
    model = create_model(name, nz=4) if get_entry(name).kind != "discriminator" else create_model(name)
    model = model.to(device)
    kind = get_entry(name).kind
    if kind == "decoder":
        x = torch.randn(2, 4, size // 8, size // 8, device=device)
        out = model(x)
        assert out.shape == (2, 3, size, size)
        loss = out.square().mean()
    elif kind == "encoder":
        x = torch.rand(2, 3, size, size, device=device) * 2 - 1
        post = model(x)
        assert post.mean.shape == (2, 4, size // 8, size // 8) and post.logvar.shape == post.mean.shape
        z = post.sample()
        loss = z.square().mean() + post.kl().mean()
        out = post.moments
    else:
        x = torch.rand(2, 3, size, size, device=device) * 2 - 1
        outs = model(x)
        assert isinstance(outs, tuple) and all(o.shape[0] == 2 for o in outs)
        loss = sum(o.square().mean() for o in outs)
        out = torch.cat([o.flatten() for o in outs])
    assert torch.isfinite(out).all()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no/invalid gradient for {missing[:5]}"


@pytest.mark.parametrize("name", [n for n in list_models() if get_entry(n).test_variant] + SMALL_FULL_SIZE)
def test_forward_backward(name):
    _forward_backward(name)


@pytest.mark.parametrize("name", [n for n in list_models(include_test=False) if n not in SMALL_FULL_SIZE])
def test_big_models_forward_shape_on_meta(name):
    # The big models are checked for shapes on the meta device (no compute); gradients are covered
    # by their tiny variants, which share every block type.
    with torch.device("meta"):
        model = create_model(name)
        kind = get_entry(name).kind
        if kind == "decoder":
            assert model(torch.empty(1, model.nz, 8, 8)).shape == (1, 3, 64, 64)
        elif kind == "encoder":
            assert model(torch.empty(1, 3, 64, 64)).mean.shape == (1, model.nz, 8, 8)
        else:
            assert model(torch.empty(1, 3, 64, 64))[0].shape[0] == 1


def test_litevae_b_256_image_gives_32x32_latent():
    with torch.device("meta"):
        post = create_model("litevae-b", nz=12)(torch.empty(1, 3, 256, 256))
    assert post.mean.shape == (1, 12, 32, 32)


def test_create_model_top_level_api_and_overrides():
    enc = litevae_cli.create_model("litevae-tiny", nz=6, dropout=None)  # None overrides are dropped
    assert enc.nz == 6
    assert "litevae-b" in litevae_cli.list_models()
    with pytest.raises(TypeError):
        litevae_cli.create_model("litevae-tiny", not_an_arg=1)
    with pytest.raises(KeyError, match="unknown model"):
        litevae_cli.create_model("litevae-xxl")


def test_autoencoder_composes_by_registry_names():
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat, post = ae(x)
    assert x_hat.shape == x.shape and post.mean.shape == (2, 4, 4, 4)
    assert torch.equal(ae.decode(ae.encode(x).mode()), ae(x, sample_posterior=False)[0])
    assert ae.spec.to_dict()["encoder"] == "litevae-tiny"
    with pytest.raises(ValueError, match="expected a decoder"):
        build_autoencoder("litevae-tiny", "patchgan")


def test_posterior_kl_and_clamp():
    from litevae_cli.models import DiagonalGaussian

    moments = torch.cat([torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), -100.0)], dim=1)
    post = DiagonalGaussian(moments)
    assert post.logvar.min() == -30.0
    std_normal = DiagonalGaussian(torch.zeros(1, 4, 2, 2))
    assert torch.allclose(std_normal.kl(), torch.zeros(1, 2, 2, 2))
    mu, logvar = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0))
    assert torch.allclose(DiagonalGaussian(torch.cat([mu, logvar], 1)).kl(), ref, atol=1e-6)
