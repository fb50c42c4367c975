"""Streaming latent statistics equal a direct float64 computation, including a two-part merge."""

import torch

from litevae_cli.latents.stats import RunningChannelStats


def test_streaming_matches_direct_and_merges():
    torch.manual_seed(0)
    chunks = [torch.randn(3, 4, 5, 5) * torch.arange(1, 5).view(1, 4, 1, 1) + 2.0 for _ in range(4)]
    whole = torch.cat(chunks).double()
    a, b = RunningChannelStats(4), RunningChannelStats(4)
    for i, c in enumerate(chunks):
        (a if i < 2 else b).update(c)
    # "all-reduce" of two ranks is a sum of their accumulators
    a.reduce_across_ranks(lambda t: t + torch.cat([b.count.view(1), b.sum, b.sumsq]))
    assert torch.allclose(a.mean, whole.mean(dim=(0, 2, 3)))
    assert torch.allclose(a.std, whole.permute(1, 0, 2, 3).reshape(4, -1).std(dim=1, unbiased=False))
    assert abs(a.global_std - whole.std(unbiased=False).item()) < 1e-9
    d = a.to_dict()
    assert abs(d["scaling_factor"] - 1 / whole.std(unbiased=False).item()) < 1e-9
    assert abs(d["shift_factor"] - whole.mean().item()) < 1e-9 and d["count_per_channel"] == 12 * 25
