"""Offline weight lookup and the LPIPS builder, on a randomly initialised torchvision backbone saved to disk."""

import pytest
import torch
import torchvision

from litevae_cli.errors import UserError
from litevae_cli.metrics.weights import build_lpips, find_weight


def test_missing_weight_message_names_file_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(UserError) as err:
        find_weight("alex", tmp_path / "wdir")
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "https://download.pytorch.org/models/" in msg
    assert str(tmp_path / "wdir") in msg and "\n" not in msg


@pytest.mark.parametrize("net,factory,filename", [("alex", torchvision.models.alexnet, "alexnet-owt-7be5be79.pth")])
def test_build_lpips_loads_backbone_from_weights_dir(tmp_path, monkeypatch, net, factory, filename):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    torch.manual_seed(0)
    backbone = factory(weights=None)
    torch.save(backbone.state_dict(), tmp_path / filename)
    model = build_lpips(net, weights_dir=tmp_path)
    assert torch.equal(model.net.slice1[0].weight, backbone.features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").bias, backbone.features[10].bias)
    assert all(not p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    d_same = model(x, x).flatten()
    d_diff = model(x, torch.rand(2, 3, 64, 64) * 2 - 1).flatten()
    assert torch.allclose(d_same, torch.zeros(2), atol=1e-6) and (d_diff > 0).all()


def test_standard_cache_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    target = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    target.write_bytes(b"x")
    assert find_weight("vgg") == target
