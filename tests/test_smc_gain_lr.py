"""optim.smc_gain_lr_mult: the SMC gains and scales (LiteVAE Eq. 3) get their own Adam group at lr x mult."""

import torch.nn as nn

from litevae_cli.models.layers import SMConv2d
from litevae_cli.training.state import generator_param_groups


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), SMConv2d(4, 4), nn.GroupNorm(2, 4))


def test_multiplier_one_is_the_papers_single_group():
    net = _net()
    groups = generator_param_groups(net, 3e-4, 1.0)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(net.parameters())) == 2 + 4 + 2


def test_gains_and_scales_get_their_own_learning_rate():
    net = _net()
    rest, gains = generator_param_groups(net, 3e-4, 10.0)
    smc = net[1]
    assert {id(p) for p in gains["params"]} == {id(smc.gain), id(smc.scale)}
    assert gains["lr"] == 3e-4 * 10.0 and "lr" not in rest
    assert len(rest["params"]) + 2 == len(list(net.parameters()))
