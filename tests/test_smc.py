"""The self-modulated convolution against a direct, loop-based computation of LiteVAE Eq. 3."""

import torch
import torch.nn.functional as F

from litevae_cli.models.layers import SMConv2d


def _eq3_reference(weight, scale, gain, eps=1e-8):
    cout, cin, kh, kw = weight.shape
    out = torch.empty_like(weight, dtype=torch.float64)
    for o in range(cout):
        denom = 0.0
        for i in range(cin):
            for a in range(kh):
                for b in range(kw):
                    denom += float(scale[i] * weight[o, i, a, b]) ** 2
        denom = (denom + eps) ** 0.5
        for i in range(cin):
            out[o, i] = gain * scale[i] * weight[o, i].double() / denom
    return out


def test_modulated_weight_matches_eq3():
    torch.manual_seed(0)
    conv = SMConv2d(5, 4)
    with torch.no_grad():
        conv.scale.copy_(torch.rand(5) * 2 + 0.1)
        conv.gain.fill_(1.7)
    ref = _eq3_reference(conv.weight.detach(), conv.scale.detach(), 1.7)
    assert torch.allclose(conv.modulated_weight().double(), ref, atol=1e-6)


def test_forward_is_one_plain_conv_with_the_modulated_weight():
    torch.manual_seed(1)
    conv = SMConv2d(3, 6)
    with torch.no_grad():
        conv.bias.normal_()
        conv.scale.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 9, 9)
    expected = F.conv2d(x, _eq3_reference(conv.weight.detach(), conv.scale.detach(), 1.0).float(),
                        conv.bias.detach(), padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_output_does_not_depend_on_weight_scale_and_each_filter_has_unit_norm():
    conv = SMConv2d(4, 4)
    w = conv.modulated_weight()
    assert torch.allclose(w.square().sum(dim=(1, 2, 3)), torch.ones(4), atol=1e-5)
    x = torch.randn(1, 4, 8, 8)
    before = conv(x)
    with torch.no_grad():
        conv.weight.mul_(10.0)
    assert torch.allclose(conv(x), before, atol=1e-5)


def test_all_parameters_get_gradients():
    conv = SMConv2d(3, 3)
    conv(torch.randn(2, 3, 8, 8)).square().mean().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# --- App. G `ResBlockWithSMC` -----------------------------------------------------------------

SILU_MIN = -0.2785  # min over x of x * sigmoid(x) is -0.27846: a branch ending in SiLU never goes below it


def _app_g_block_reference(block, x):
    """P App. G's forward, step by step, with each SMC weight from the loop-based Eq. 3 above:
    act_in -> SMC_1 -> act_out -> dropout (identity in eval) -> SMC_2, plus the skip."""
    def smc(conv, h):
        w = _eq3_reference(conv.weight.detach(), conv.scale.detach(), float(conv.gain)).float()
        return F.conv2d(h, w, conv.bias.detach(), padding=1)
    h = smc(block.conv2, F.silu(smc(block.conv1, F.silu(x))))
    return block.skip(x) + h, h


def _randomised_block(cin, cout, dropout=0.0):
    from litevae_cli.models.layers import SMCResBlock

    torch.manual_seed(2)
    block = SMCResBlock(cin, cout, dropout)
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            conv.scale.uniform_(0.5, 2.0)
            conv.gain.fill_(1.3)
            conv.bias.normal_(std=0.1)
    return block


def test_smc_resblock_structure_is_app_g():
    from litevae_cli.models.layers import SMCResBlock

    block = SMCResBlock(6, 4, dropout=0.1)
    assert [name for name, _ in block.named_children()] == ["conv1", "dropout", "conv2", "skip"]
    assert isinstance(block.conv1, SMConv2d) and isinstance(block.conv2, SMConv2d)
    assert (block.conv1.weight.shape[:2], block.conv2.weight.shape[:2]) == ((4, 6), (4, 4))
    assert isinstance(block.skip, torch.nn.Conv2d) and block.skip.kernel_size == (1, 1)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in block.modules())
    assert isinstance(SMCResBlock(4, 4).skip, torch.nn.Identity)


def test_smc_resblock_matches_app_g_forward_and_branch_is_not_bounded_by_silu():
    for cin, cout in ((6, 4), (4, 4)):
        block = _randomised_block(cin, cout).eval()
        x = torch.randn(2, cin, 10, 10) * 2
        expected, branch = _app_g_block_reference(block, x)
        with torch.no_grad():
            out = block(x)
        assert torch.allclose(out, expected, atol=1e-5)
        # The branch ends in a convolution, so it adds clearly negative values to the stream.
        assert branch.min() < 3 * SILU_MIN
        assert torch.allclose(out - block.skip(x), branch, atol=1e-5)


def test_smc_resblock_dropout_sits_before_the_second_smc():
    # With p=1 every activation entering SMC_2 is zero, so the branch is SMC_2's bias alone.
    block = _randomised_block(4, 4, dropout=1.0).train()
    x = torch.randn(1, 4, 6, 6)
    out = block(x)
    assert torch.allclose(out, x + block.conv2.bias.view(1, -1, 1, 1), atol=1e-6)
