"""The GigaGAN discriminator: its size against open-LiteVAE's table, the one-head multi-scale logits and
their reduction, gradients to every parameter (DDP), 128/256 px crops, bf16 autocast, the filter-bank
conv and the L2 attention against their formulas, and a 20-step finetune through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from litevae_cli.models import create_model, get_entry, list_models
from litevae_cli.models.complexity import model_complexity
from litevae_cli.models.gigagan import FilterBankConv1x1, GigaGANDiscriminator, L2SelfAttention
from litevae_cli.training.losses import adversarial_g_loss, discriminator_loss

# open-LiteVAE README, discriminator table: GigaGAN 14.38 M params, 3.23 G "FLOPs" (MACs) at 256x256.
OL_PARAMS, OL_MACS = 14.38e6, 3.23e9


def _n_logits(side: int, levels: int) -> int:
    """Logits per image: one map per level (side/2 ... side/2^levels), squared, plus the global one."""
    return sum((side >> (level + 1)) ** 2 for level in range(levels)) + 1


def _grads_everywhere(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Small convolutions: one thread is fastest on the shared 2-core machine."""


def test_size_matches_open_litevae_table_as_litevae_models_counts_it():
    row = model_complexity("gigagan", 256)  # what `litevae models` prints
    assert abs(row["params"] / OL_PARAMS - 1) < 0.03, row["params"]
    assert abs(row["gflops_256"] * 1e9 / 2 / OL_MACS - 1) < 0.05, row["gflops_256"]  # GFLOP = 2 x MAC


def test_registry_entries():
    assert {"gigagan", "gigagan-tiny"} <= set(list_models("discriminator"))
    assert get_entry("gigagan-tiny").test_variant and not get_entry("gigagan").test_variant
    assert "gigagan-tiny" not in list_models("discriminator", include_test=False)
    assert isinstance(create_model("gigagan-tiny"), GigaGANDiscriminator)


def test_full_model_levels_and_logit_count_at_256_on_meta():
    with torch.device("meta"):
        model = create_model("gigagan")
        maps = model.levels_logits(torch.empty(2, 3, 256, 256))
        (flat,) = model(torch.empty(2, 3, 256, 256))
    assert [tuple(m.shape[-2:]) for m in maps] == [(128, 128), (64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (1, 1)]
    assert flat.shape == (2, _n_logits(256, 6)) == (2, 21841)
    # Attention at 16 and 8 px only, as open-LiteVAE's attn=[8, 16]; C_l = min(4096 / side, 256).
    assert [lvl.attention is not None for lvl in model.levels] == [False, False, False, True, True, False]
    assert [lvl.convs[0].out_channels for lvl in model.levels] == [32, 64, 128, 256, 256, 256]


@pytest.mark.parametrize("side", [64, 128, 256])
def test_tiny_forward_backward_reaches_every_parameter(side):
    # 128 and 256 are the phase-B crops; every parameter must get a gradient in one forward (DDP).
    torch.manual_seed(0)
    model = create_model("gigagan-tiny")
    out = model(torch.rand(2, 3, side, side) * 2 - 1)
    assert isinstance(out, tuple) and len(out) == 1 and out[0].shape == (2, _n_logits(side, 4))
    assert torch.isfinite(out[0]).all()
    out[0].square().mean().backward()
    assert not _grads_everywhere(model)


def test_full_model_at_128_reaches_every_parameter():
    torch.manual_seed(0)
    model = create_model("gigagan")
    (logits,) = model(torch.rand(2, 3, 128, 128) * 2 - 1)
    assert logits.shape == (2, _n_logits(128, 6))
    adversarial_g_loss((logits,)).backward()
    assert not _grads_everywhere(model)


def test_logits_are_reduced_as_one_mean_over_all_levels():
    # The reference concatenates every level's logits and takes one mean: each logit counts once.
    torch.manual_seed(0)
    model = create_model("gigagan-tiny").eval()
    real, fake = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        loss, _ = discriminator_loss(model(real), model(fake), "hinge")
        r, f = (torch.cat([m.flatten() for m in model.levels_logits(x)]) for x in (real, fake))
    assert loss.item() == pytest.approx((F.relu(1 - r).mean() + F.relu(1 + f).mean()).item(), rel=1e-6)
    per_level_mean = torch.stack([F.relu(1 - m).mean() for m in model.levels_logits(real)]).mean()
    assert F.relu(1 - r).mean().item() != pytest.approx(per_level_mean.item(), rel=1e-3)  # not per level


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    model = create_model("gigagan-tiny")
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        (ref,) = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out,) = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.02
    adversarial_g_loss((out,)).backward()
    assert not _grads_everywhere(model)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_filter_bank_conv_is_a_per_sample_demodulated_mixture():
    torch.manual_seed(0)
    conv = FilterBankConv1x1(6, 5, style_dim=4, banks=3)
    x, style = torch.randn(2, 6, 3, 3), torch.randn(2, 4)
    kernels = conv.sample_kernels(style)
    assert kernels.shape == (2, 5, 6)
    assert torch.allclose(kernels.norm(dim=-1), torch.ones(2, 5), atol=1e-4)  # demodulated rows
    mix = torch.einsum("nk,koi->noi", conv.select(style).softmax(-1), conv.kernels) * conv.affine(style)[:, None]
    assert torch.allclose(kernels, mix / mix.norm(dim=-1, keepdim=True), atol=1e-5)
    assert not torch.allclose(kernels[0], kernels[1], atol=1e-3)  # the kernel depends on the sample
    out = conv(x, style)
    for i in range(2):  # each sample through its own 1x1 conv
        expected = F.conv2d(x[i : i + 1], kernels[i][:, :, None, None], conv.bias)
        assert torch.allclose(out[i : i + 1], expected, atol=1e-5)


def test_l2_attention_is_softmax_of_negative_squared_distances():
    torch.manual_seed(0)
    attn = L2SelfAttention(8, head_dim=4)  # 2 heads
    x = torch.randn(2, 5, 8)
    q = attn.qk(x).view(2, 5, 2, 4).transpose(1, 2)
    v = attn.v(x).view(2, 5, 2, 4).transpose(1, 2)
    weights = (-torch.cdist(q, q).square() / math.sqrt(4)).softmax(-1)
    expected = attn.out((weights @ v).transpose(1, 2).reshape(2, 5, 8))
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_spectral_norm_on_every_conv_and_bad_inputs_rejected():
    model = create_model("gigagan-tiny")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    with pytest.raises(ValueError, match="sides >= 16"):
        model(torch.zeros(1, 3, 8, 32))
    with pytest.raises(ValueError, match="power of two"):
        GigaGANDiscriminator(image_size=96)


@pytest.mark.slow
def test_20_step_finetune_through_the_cli(tiny_ckpt, tiny_preset, make_images, tmp_path):
    from litevae_cli.cli import app

    preset = tiny_preset(phase="finetune", log={"checkpoint_every": 10})
    out = tmp_path / "ft"
    result = CliRunner().invoke(app, [
        "finetune", "--preset", preset, "--data", str(make_images(n=3)), "--out", str(out), "--from", tiny_ckpt,
        "--set", "discriminator.name=gigagan-tiny", "--steps", "20", "--precision", "bf16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 21))
    assert all(math.isfinite(r["d/total"]) and math.isfinite(r["g/adv"]) for r in records)
    assert records[-1]["nonfinite_steps"] == 0
    mid = torch.load(out / "checkpoints" / "step-0000010.pt", weights_only=True)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 20 and last["discriminator_name"] == "gigagan-tiny"
    assert last["discriminator"].keys() == create_model("gigagan-tiny").state_dict().keys()
    moved = [k for k, v in last["discriminator"].items() if not torch.equal(v, mid["discriminator"][k])]
    assert any(".kernels" in k for k in moved) and any("levels.0.convs" in k for k in moved)
