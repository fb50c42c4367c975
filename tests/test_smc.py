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
