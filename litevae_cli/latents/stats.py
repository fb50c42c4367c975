"""Streaming per-channel statistics of latents, and the scale/shift a diffusion model should apply.

Used by `encode-dataset` (stats.json) and `inspect-latents`. Sums are kept in float64 so that
millions of latents accumulate without drift; ranks combine by summing (`reduce_across_ranks`).
The recommended factors follow diffusers' convention: z_normalised = (z - shift_factor) * scaling_factor,
with shift_factor = the global mean and scaling_factor = 1 / the global std.
"""

from __future__ import annotations

import math

import torch


class RunningChannelStats:
    """Count, sum and sum of squares per channel of [N, C, H, W] tensors, in float64."""

    def __init__(self, channels: int):
        self.channels = channels
        self.count = torch.zeros((), dtype=torch.float64)  # elements per channel
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sumsq = torch.zeros(channels, dtype=torch.float64)

    def update(self, z: torch.Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(f"expected [N, {self.channels}, H, W], got {tuple(z.shape)}")
        z = z.detach().to("cpu", torch.float64)
        self.count += z.shape[0] * z.shape[2] * z.shape[3]
        self.sum += z.sum(dim=(0, 2, 3))
        self.sumsq += z.square().sum(dim=(0, 2, 3))

    def state(self) -> dict:
        return {"count": self.count.clone(), "sum": self.sum.clone(), "sumsq": self.sumsq.clone()}

    def load_state(self, state: dict) -> None:
        self.count, self.sum, self.sumsq = (state[k].to(torch.float64).clone() for k in ("count", "sum", "sumsq"))

    def reduce_across_ranks(self, all_reduce_sum) -> None:
        """Sum the accumulators over ranks with `all_reduce_sum(tensor) -> tensor` (runtime.all_reduce_sum)."""
        packed = all_reduce_sum(torch.cat([self.count.view(1), self.sum, self.sumsq]))
        self.count, self.sum, self.sumsq = packed[0], packed[1:1 + self.channels], packed[1 + self.channels:]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / self.count

    @property
    def std(self) -> torch.Tensor:
        """Population std per channel."""
        return (self.sumsq / self.count - self.mean.square()).clamp_min(0).sqrt()

    @property
    def global_mean(self) -> float:
        return float(self.sum.sum() / (self.count * self.channels))

    @property
    def global_std(self) -> float:
        n = float(self.count) * self.channels
        return math.sqrt(max(float(self.sumsq.sum()) / n - self.global_mean**2, 0.0))

    def to_dict(self) -> dict:
        """JSON-ready summary, with diffusers' scaling_factor and shift_factor."""
        return {
            "count_per_channel": int(self.count),
            "channel_mean": self.mean.tolist(),
            "channel_std": self.std.tolist(),
            "global_mean": self.global_mean,
            "global_std": self.global_std,
            "scaling_factor": 1.0 / self.global_std if self.global_std > 0 else float("nan"),
            "shift_factor": self.global_mean,
            "convention": "z_normalised = (z - shift_factor) * scaling_factor (diffusers)",
        }
