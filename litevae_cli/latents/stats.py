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

Reading a stats.json (`normalization_factors`, `latent_stats_factors`; `export --stats`, `load(stats=)`,
`LatentShards`) checks what it uses: numbers (not strings or booleans), finite, a scale in
[1/MAX_FACTOR, MAX_FACTOR] and a shift within +-MAX_FACTOR (`check_factor`, shared with the diffusers
config readers); anything else is one UserError naming the file and the key (issue 25).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from litevae_cli.errors import UserError, one_line

STATS_NAME = "stats.json"  # encode-dataset's statistics file
# Factors past 1e6 (a latent std below 1e-6 or above 1e6, a mean beyond 1e6) come from a broken model or a
# hand-edited file, never from data; a diffusion model fed such latents sees zeros or overflows in fp16.
MAX_FACTOR = 1e6


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


def check_factor(value, name: str, source: str, scale: bool = False) -> float:
    """`value` as a finite float: a scale in [1/MAX_FACTOR, MAX_FACTOR], a shift within +-MAX_FACTOR; else a
    one-line UserError '{source}: {name} ...'."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{source}: {name} must be a number, got {type(value).__name__} {str(value)[:60]!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{source}: {name} must be a finite number, got {value}")
    if scale and not 1 / MAX_FACTOR <= value <= MAX_FACTOR:
        raise UserError(f"{source}: {name} must be in [{1 / MAX_FACTOR:g}, {MAX_FACTOR:g}], got {value:g} (a latent "
                        "std outside that range is a broken model or file)")
    if not scale and abs(value) > MAX_FACTOR:
        raise UserError(f"{source}: {name} must be within +-{MAX_FACTOR:g}, got {value:g}")
    return value


def check_factors(values, name: str, source: str, scale: bool = False, channels: int | None = None) -> list[float]:
    """A per-channel list of `check_factor`s (of `channels` entries when given)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise UserError(f"{source}: {name} must be a list of numbers, got {type(values).__name__} {str(values)[:60]!r}")
    if channels is not None and len(values) != channels:
        raise UserError(f"{source}: {name} has {len(values)} values for {channels} latent channels")
    return [check_factor(v, f"{name}[{i}]", source, scale) for i, v in enumerate(values)]


def normalization_factors(stats: dict, sample: bool, per_channel: bool = False, source: str = STATS_NAME):
    """(scale, shift) from a stats.json dict for sampled (`sample=True`) or posterior-mean latents: floats,
    or per-channel lists, checked (`check_factor`). stats.json files without the sampled statistics serve
    `sample=False` only."""
    if not isinstance(stats, dict):
        raise UserError(f"{source} must hold a JSON object, got {type(stats).__name__}")
    nz = stats.get("nz")
    if nz is not None and (isinstance(nz, bool) or not isinstance(nz, int) or nz < 1):
        raise UserError(f"{source}: nz must be a positive integer, got {nz!r}")
    norm = stats.get("normalization")
    if norm is None:
        if sample or per_channel:
            raise UserError(f"{source} has no statistics of sampled latents or per channel (written by an older "
                            "litevae); re-encode with --overwrite, or pass scale and shift explicitly")
        return (check_factor(stats.get("scaling_factor"), "scaling_factor", source, scale=True),
                check_factor(stats.get("shift_factor"), "shift_factor", source))
    kind = "sample" if sample else "mean"
    f = norm.get(kind) if isinstance(norm, dict) else None
    if not isinstance(f, dict):
        raise UserError(f"{source}: normalization.{kind} must be an object with scaling_factor and shift_factor")
    where = f"normalization.{kind}."
    if per_channel:
        return (check_factors(f.get("channel_scaling_factor"), where + "channel_scaling_factor", source, True, nz),
                check_factors(f.get("channel_shift_factor"), where + "channel_shift_factor", source, False, nz))
    return (check_factor(f.get("scaling_factor"), where + "scaling_factor", source, scale=True),
            check_factor(f.get("shift_factor"), where + "shift_factor", source))


def read_stats_file(path) -> dict:
    """A stats.json as a dict; unreadable, not JSON or not an object: one UserError naming the file. Its
    factors are checked where they are used (`normalization_factors`)."""
    try:
        stats = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read latent statistics {path}: {one_line(err, 200)}") from None
    if not isinstance(stats, dict):
        raise UserError(f"{path} must hold a JSON object, got {type(stats).__name__}")
    return stats


def latent_stats_factors(stats, nz: int) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of sampled latents from an encode-dataset stats.json (a path to it or its
    folder, or its dict), checked. A stats.json of another model's latents is refused (latent channels)."""
    source = "the latent statistics"
    if not isinstance(stats, dict):
        path = Path(stats) / STATS_NAME if Path(stats).is_dir() else Path(stats)
        source, stats = str(path), read_stats_file(path)
    scale, shift = normalization_factors(stats, sample=True, source=source)
    if stats.get("nz") not in (None, nz):
        raise UserError(f"{source}: these statistics are of {stats.get('nz')}-channel latents; this model has {nz}")
    return scale, shift
