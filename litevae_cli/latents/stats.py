"""Streaming per-channel statistics of latents, and the scale/shift a diffusion model should apply.

Two accumulators, one home: `RunningChannelStats` (sums of mu, mu^2 and sigma^2: what ranks add up and
encode-dataset resumes from) and `ChannelMoments` (exact central moments up to the 4th, min and max:
inspect-latents' table).

Used by `encode-dataset` (stats.json), `inspect-latents`, the latent reader and the diffusers `LiteVAE`.
Sums are kept in float64 so that millions of latents accumulate without drift; ranks combine by summing
(`reduce_across_ranks`). The factors follow diffusers' convention: z_normalised = (z - shift) * scale.

Two latents, two sets of factors (`normalization_factors` picks one):
- "mean": the posterior mean mu; shift = E[mu], scale = 1 / std(mu).
- "sample": z = mu + sigma * eps, what LDM computes its factor from (Rombach et al. 2022, Sec. 4.3.2 and
  App. D.1: 1 / the std of encoded samples) and what diffusers' training scripts feed the diffusion model
  (`latent_dist.sample() * scaling_factor`). E[z] = E[mu] and Var[z] = Var[mu] + E[sigma^2], computed
  exactly from the streamed sums of mu, mu^2 and sigma^2, with no sampling noise.
The sampled latents are wider than the means by the mean posterior variance; normalising samples with
the mean's scale gives a std well above 1 (3.3 on a 4-step model, issue 13).
Each set is global (one scale and shift over every channel) and per channel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from litevae_cli.errors import UserError, one_line

STATS_NAME = "stats.json"  # encode-dataset's statistics file


_STATE_KEYS = ("count", "sum", "sumsq", "var_count", "sumvar", "sumstd")


class ChannelMoments:
    """Exact streaming count/mean/M2/M3/M4/min/max per channel of [N, C, H, W] tensors (float64)."""

    def __init__(self, channels: int):
        z = lambda: torch.zeros(channels, dtype=torch.float64)  # noqa: E731
        self.n, self.mean, self.m2, self.m3, self.m4 = 0.0, z(), z(), z(), z()
        self.min = torch.full((channels,), float("inf"), dtype=torch.float64)
        self.max = torch.full((channels,), float("-inf"), dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        v = x.detach().to("cpu", torch.float64).transpose(0, 1).reshape(x.shape[1], -1)  # [C, n]
        nb = float(v.shape[1])
        if nb == 0:
            return
        mb = v.mean(1)
        d = v - mb[:, None]
        m2b, m3b, m4b = (d**2).sum(1), (d**3).sum(1), (d**4).sum(1)
        na, n = self.n, self.n + nb
        delta = mb - self.mean
        # Pairwise combination of central moments (Pébay 2008, Eq. 1.1-1.4 with p = 2, 3, 4).
        m4 = (self.m4 + m4b + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
              + 6 * delta**2 * (na * na * m2b + nb * nb * self.m2) / n**2 + 4 * delta * (na * m3b - nb * self.m3) / n)
        m3 = self.m3 + m3b + delta**3 * na * nb * (na - nb) / n**2 + 3 * delta * (na * m2b - nb * self.m2) / n
        self.m2 = self.m2 + m2b + delta**2 * na * nb / n
        self.m3, self.m4 = m3, m4
        self.mean = self.mean + delta * nb / n
        self.n = n
        self.min = torch.minimum(self.min, v.min(1).values)
        self.max = torch.maximum(self.max, v.max(1).values)

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / self.n).sqrt()  # population std, as numpy's default

    @property
    def kurtosis(self) -> torch.Tensor:
        """Fisher (excess) kurtosis, biased estimator: n * M4 / M2^2 - 3 (scipy.stats.kurtosis defaults)."""
        return self.n * self.m4 / self.m2.square() - 3.0

    def per_channel(self) -> list[dict]:
        cols = zip(self.mean.tolist(), self.std.tolist(), self.min.tolist(), self.max.tolist(), self.kurtosis.tolist())
        return [{"channel": c, "mean": a, "std": s, "min": lo, "max": hi, "kurtosis": k}
                for c, (a, s, lo, hi, k) in enumerate(cols)]


class RunningChannelStats:
    """Count, sum and sum of squares per channel of the posterior mean [N, C, H, W], in float64; with the
    log-variance too, the sums of the posterior variance and std (for the statistics of samples)."""

    def __init__(self, channels: int):
        self.channels = channels
        self.count = torch.zeros((), dtype=torch.float64)  # elements per channel
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sumsq = torch.zeros(channels, dtype=torch.float64)
        self.var_count = torch.zeros((), dtype=torch.float64)  # elements per channel given with a logvar
        self.sumvar = torch.zeros(channels, dtype=torch.float64)  # sum of sigma^2
        self.sumstd = torch.zeros(channels, dtype=torch.float64)  # sum of sigma

    def update(self, z: torch.Tensor, logvar: torch.Tensor | None = None) -> None:
        if z.ndim != 4 or z.shape[1] != self.channels:
            raise ValueError(f"expected [N, {self.channels}, H, W], got {tuple(z.shape)}")
        z = z.detach().to("cpu", torch.float64)
        self.count += z.shape[0] * z.shape[2] * z.shape[3]
        self.sum += z.sum(dim=(0, 2, 3))
        self.sumsq += z.square().sum(dim=(0, 2, 3))
        if logvar is not None:
            if logvar.shape != z.shape:
                raise ValueError(f"logvar {tuple(logvar.shape)} does not match the mean {tuple(z.shape)}")
            lv = logvar.detach().to("cpu", torch.float64)
            self.var_count += z.shape[0] * z.shape[2] * z.shape[3]
            self.sumvar += lv.exp().sum(dim=(0, 2, 3))
            self.sumstd += (0.5 * lv).exp().sum(dim=(0, 2, 3))

    def state(self) -> dict:
        return {k: getattr(self, k).clone() for k in _STATE_KEYS}

    def load_state(self, state: dict) -> None:
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise UserError(f"the saved latent statistics lack {', '.join(missing)} (written by an older litevae, "
                            "without the posterior variance); start over with --overwrite")
        for k in _STATE_KEYS:
            setattr(self, k, state[k].to(torch.float64).clone())

    def packed(self) -> torch.Tensor:
        """Every accumulator in one float64 vector (what ranks sum)."""
        return torch.cat([self.count.view(1), self.sum, self.sumsq, self.var_count.view(1), self.sumvar, self.sumstd])

    def reduce_across_ranks(self, all_reduce_sum) -> None:
        """Sum the accumulators over ranks with `all_reduce_sum(tensor) -> tensor` (runtime.all_reduce_sum)."""
        p, c = all_reduce_sum(self.packed()), self.channels
        self.count, self.sum, self.sumsq = p[0], p[1:1 + c], p[1 + c:1 + 2 * c]
        self.var_count, self.sumvar, self.sumstd = p[1 + 2 * c], p[2 + 2 * c:2 + 3 * c], p[2 + 3 * c:]

    @property
    def has_posterior(self) -> bool:
        """Every update came with its log-variance, so the statistics of samples are known."""
        return float(self.count) > 0 and float(self.var_count) == float(self.count)

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
        """JSON-ready summary: the posterior mean's statistics, diffusers' scaling_factor and shift_factor of
        the posterior mean (kept at the top level as before) and, when the log-variance was given, the mean
        posterior std and `normalization` {"mean", "sample"}: scale and shift, global and per channel."""
        out = {
            "count_per_channel": int(self.count),
            "channel_mean": self.mean.tolist(),
            "channel_std": self.std.tolist(),
            "global_mean": self.global_mean,
            "global_std": self.global_std,
            "scaling_factor": _inverse(self.global_std),
            "shift_factor": self.global_mean,
            "convention": "z_normalised = (z - shift_factor) * scaling_factor (diffusers)",
        }
        if not self.has_posterior:
            return out
        n = float(self.count)
        mean_var = float(self.sumvar.sum()) / (n * self.channels)
        sample_std = (self.std.square() + self.sumvar / n).sqrt()
        out["posterior_std_mean"] = float(self.sumstd.sum()) / (n * self.channels)
        out["channel_posterior_std"] = (self.sumstd / n).tolist()
        out["normalization"] = {
            "mean": _factors(self.global_mean, self.global_std, self.mean, self.std),
            "sample": _factors(self.global_mean, math.sqrt(self.global_std**2 + mean_var), self.mean, sample_std),
            "note": "mean: of the posterior mean mu; sample: of z = mu + sigma * eps, exact in expectation "
                    "(Var[z] = Var[mu] + E[sigma^2]); use the set that matches the latents you normalise",
        }
        return out


def _inverse(std: float) -> float:
    return 1.0 / std if std > 0 else float("nan")


def _factors(global_mean: float, global_std: float, mean: torch.Tensor, std: torch.Tensor) -> dict:
    return {"scaling_factor": _inverse(global_std), "shift_factor": global_mean,
            "channel_scaling_factor": [_inverse(float(s)) for s in std], "channel_shift_factor": mean.tolist()}


def normalization_factors(stats: dict, sample: bool, per_channel: bool = False):
    """(scale, shift) from a stats.json dict for sampled (`sample=True`) or posterior-mean latents: floats,
    or per-channel lists. stats.json files without the sampled statistics serve `sample=False` only."""
    norm = stats.get("normalization")
    if norm is None:
        if sample or per_channel:
            raise UserError("stats.json has no statistics of sampled latents or per channel (written by an older "
                            "litevae); re-encode with --overwrite, or pass scale and shift explicitly")
        return float(stats["scaling_factor"]), float(stats["shift_factor"])
    f = norm["sample" if sample else "mean"]
    if per_channel:
        return list(f["channel_scaling_factor"]), list(f["channel_shift_factor"])
    return float(f["scaling_factor"]), float(f["shift_factor"])


def latent_stats_factors(stats, nz: int) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of sampled latents from an encode-dataset stats.json (a path to it or its
    folder, or its dict). A stats.json of another model's latents is refused (latent channels)."""
    if not isinstance(stats, dict):
        path = Path(stats) / STATS_NAME if Path(stats).is_dir() else Path(stats)
        try:
            stats = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read latent statistics {path}: {one_line(err, 200)}") from None
    if stats.get("nz") not in (None, nz):
        raise UserError(f"these statistics are of {stats.get('nz')}-channel latents; this model has {nz}")
    return normalization_factors(stats, sample=True)
