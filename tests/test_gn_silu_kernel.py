"""The fused GroupNorm+SiLU kernel experiment (benchmarks/speed/gn_silu_kernel.{c,py}): its values against an fp32
reference within bf16 rounding, what it covers and what goes to ATen, and the model copy it makes. Skipped where
it cannot build (no avx512_bf16, no C compiler): `unavailable()` is then checked to say so."""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "speed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gn_silu_kernel as kernel  # noqa: E402

needs_kernel = pytest.mark.skipif(kernel.unavailable() is not None, reason=str(kernel.unavailable()))


def _norm(channels: int, groups: int) -> torch.nn.GroupNorm:
    norm = torch.nn.GroupNorm(groups, channels, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    return norm


def test_unavailable_names_a_reason_or_none(monkeypatch):
    monkeypatch.setattr(kernel, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert "avx512_bf16" in kernel.unavailable()
    monkeypatch.setattr(kernel, "_cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    assert "no C compiler" in kernel.unavailable()


@needs_kernel
@pytest.mark.parametrize("shape,groups", [((2, 64, 17, 9), 32), ((1, 128, 32, 32), 32), ((3, 96, 8, 8), 32),
                                          ((2, 48, 5, 7), 16), ((1, 32, 300, 1), 32)])
def test_kernel_matches_fp32_within_bf16_rounding(shape, groups):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3 + 1).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    norm = _norm(shape[1], groups)
    before = dict(kernel.calls)
    y = kernel.gn_silu(x, norm)
    assert kernel.calls["fused"] == before["fused"] + 1 and kernel.calls["aten"] == before["aten"]
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    ref = F.silu(norm(x.float()))
    # One bf16 rounding of the exact value: |error| <= 2^-8 |ref| (one unit in the last place), plus fp32 slack.
    assert ((y.float() - ref).abs() <= ref.abs() * 2 ** -8 + 1e-5).all()
    # ATen's bf16 path (rounded after the norm and after the SiLU) is no closer to fp32 than the kernel.
    aten = F.silu(norm(x))
    assert (y.float() - ref).abs().max() <= (aten.float() - ref).abs().max()


@needs_kernel
def test_inputs_the_kernel_does_not_cover_go_to_aten():
    norm = _norm(24, 8)  # 24 channels: not a multiple of 16
    for x in (torch.randn(1, 24, 4, 4, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last),
              torch.randn(1, 32, 4, 4, dtype=torch.bfloat16),  # NCHW
              torch.randn(1, 32, 4, 4).contiguous(memory_format=torch.channels_last)):  # fp32
        n = x.shape[1]
        norm = _norm(n, 8)
        before = dict(kernel.calls)
        assert torch.equal(kernel.gn_silu(x, norm), F.silu(norm(x)))
        assert kernel.calls["aten"] == before["aten"] + 1 and kernel.calls["fused"] == before["fused"]


def test_fused_copy_wraps_every_group_norm_and_keeps_the_original():
    from litevae_cli import create_model

    model = create_model("litevae-tiny", nz=4)
    copy = kernel.fused_copy(model)
    wrapped = [m for m in copy.modules() if isinstance(m, kernel.FusedGroupNormSiLU)]
    assert len(wrapped) == sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) > 0
    assert not any(isinstance(m, kernel.FusedGroupNormSiLU) for m in model.modules())
    assert all(isinstance(m.norm, torch.nn.GroupNorm) for m in wrapped)


@needs_kernel
def test_fused_copy_with_silu_as_identity_is_the_model():
    """Every SiLU in litevae's encoder follows a GroupNorm: the copy, run with SiLU patched out, computes the same
    moments as the stock model in bf16 channels_last (within bf16 rounding through the net)."""
    from fusion_bound import silu_as_identity

    from litevae_cli import create_model

    torch.manual_seed(0)
    model = create_model("litevae-tiny", nz=4).eval().to(memory_format=torch.channels_last)
    fused = kernel.fused_copy(model)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(x).moments.float()
        before = dict(kernel.calls)
        with silu_as_identity():
            out = fused(x).moments.float()
    assert kernel.calls["fused"] > before["fused"]
    assert ((out - ref).norm() / ref.norm()).item() < 0.05


@needs_kernel
def test_the_peer_with_the_kernel_is_the_peer_when_its_attention_norm_is_skipped():
    """diffusers' encoder: every GroupNorm but the attention's is followed by SiLU. With `skip` the fused copy
    computes the stock moments; wrapping the attention norm too (a SiLU where there is none) does not."""
    from compiled_encoders import Moments, build
    from fusion_bound import PEER, PEER_UNFUSED, silu_as_identity

    torch.manual_seed(0)
    peer = build(quick=True)[PEER]
    assert any(name.rsplit(".", 1)[-1] in PEER_UNFUSED for name, _ in peer.named_modules())  # it has attention
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).contiguous(memory_format=torch.channels_last)

    def moments(model, no_silu):
        m = Moments(model, peer=True).eval().to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            if no_silu:
                with silu_as_identity():
                    return m(x).float()
            return m(x).float()
    ref = moments(peer, False)

    def rel(out):
        return ((out - ref).norm() / ref.norm()).item()
    assert rel(moments(kernel.fused_copy(peer, skip=PEER_UNFUSED), True)) < 0.05
    assert rel(moments(kernel.fused_copy(peer), True)) > 0.05
