"""A look at the latent space: statistics of the posterior, MMD to N(0, I), recommended scale/shift, plots.

Owns `litevae inspect-latents`. Latents come either from MODEL encoding images (`--data`, resized
shorter side + center crop to `--resolution`) or from encode-dataset shards (their stored moments).
What is measured (posterior q(z|x) = N(mu, diag(sigma^2)), log-variance clamped as in the model):
- per channel of the posterior MEAN mu: mean, std, min, max and kurtosis. Kurtosis is Fisher's
  (excess; 0 for a Gaussian) with the biased moment estimator, = scipy.stats.kurtosis(x) defaults
  (fisher=True, bias=True). Moments are streamed exactly in float64 (pairwise merge of central
  moments, Pébay 2008), so any number of images fits in memory.
- the average posterior std sigma (all elements, and per channel), and the KL(q || N(0, I)) per
  latent element in nats, 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2), averaged.
- MMD to N(0, I) as in P Table 6: Gaussian kernels k_s(x, y) = exp(-||x - y||^2 / (2 s^2)) with
  s in SIGMAS = (25, 50, 100, 250, 500), on FLATTENED latents (one vector of d = C*h*w per image).
  X = the posterior means of the first m images (m = min(images, --mmd-samples)); Y = m vectors drawn
  i.i.d. from N(0, I_d) with torch.Generator().manual_seed(seed) (seed 0 by default), same shape as X.
  Estimator: the UNBIASED MMD^2 (Gretton et al. 2012, JMLR, Eq. 3), per kernel:
      MMD^2_u = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2
  reported per sigma and as their SUM ("sum", the MMD^2 of the sum kernel). It is MMD^2, not its
  square root, and can be slightly negative when the two sets are close. Computed twice: on the raw
  latents ("raw") and on (z - shift_factor) * scaling_factor ("normalised").
- recommended scaling_factor / shift_factor of the posterior mean and of sampled latents
  (latents.stats.RunningChannelStats, diffusers' convention).
Plots (plots.py, PNG): per-channel histograms of mu (raw and normalised) against the N(0,1)
density, from the same first m images; and the latent channels of the first few images next to the
input, each channel mapped from mean +- 3 std of that channel to black..white.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from litevae_cli.errors import UserError
from litevae_cli.latents.stats import ChannelMoments, RunningChannelStats
from litevae_cli.models.posterior import LOGVAR_RANGE, kl_standard_normal

DEFAULT_BATCH_SIZE = 16
SIGMAS = (25.0, 50.0, 100.0, 250.0, 500.0)  # P Table 6
MMD_ESTIMATOR = ("unbiased MMD^2 (Gretton et al. 2012, Eq. 3) per Gaussian kernel exp(-||x-y||^2/(2 s^2)), "
                 "s in (25, 50, 100, 250, 500), on flattened posterior means vs the same number of seeded "
                 "N(0, I) samples of the same shape; 'sum' = sum over the kernels")


# ----------------------------------------------------------------------------- statistics
def gaussian_mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, sigmas=SIGMAS) -> dict[str, float]:
    """Unbiased MMD^2 between rows of x [m, d] and y [n, d] per Gaussian kernel, plus their sum (float64)."""
    x, y = x.to(torch.float64).flatten(1), y.to(torch.float64).flatten(1)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")

    def sqdist(a, b):
        return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)

    dxx, dyy, dxy = sqdist(x, x), sqdist(y, y), sqdist(x, y)
    out = {}
    for s in sigmas:
        kxx, kyy, kxy = (torch.exp(-dd / (2.0 * s * s)) for dd in (dxx, dyy, dxy))
        xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        out[f"{s:g}"] = float(xx + yy - 2.0 * kxy.mean())
    out["sum"] = float(sum(out.values()))
    return out


def standard_normal_like(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Seeded N(0, I) samples with x's shape (float64, CPU)."""
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@dataclass
class LatentBatch:
    mean: torch.Tensor  # [N, C, h, w] posterior mean
    logvar: torch.Tensor  # [N, C, h, w] clamped log-variance
    keys: list[str]
    images: Optional[Sequence] = None  # per item [3, H, W] in [-1, 1] or None (e.g. a stacked batch)


class LatentInspector:
    """Streams LatentBatches; keeps the first `keep` means (MMD, histograms) and `examples` images."""

    def __init__(self, keep: int = 1000, examples: int = 4, seed: int = 0):
        self.keep, self.examples, self.seed = keep, examples, seed
        self.moments = self.stats = None
        self.shape: Optional[tuple] = None
        self.images = 0
        self.std_sum = self.kl_sum = None
        self.kept: list[torch.Tensor] = []
        self.example_rows: list[tuple[str, Optional[np.ndarray], np.ndarray]] = []

    def update(self, b: LatentBatch) -> None:
        mu, logvar = b.mean.detach().cpu().double(), b.logvar.detach().cpu().double()
        if self.shape is None:
            self.shape = tuple(mu.shape[1:])
            c = self.shape[0]
            self.moments, self.stats = ChannelMoments(c), RunningChannelStats(c)
            self.std_sum = torch.zeros(c, dtype=torch.float64)
            self.kl_sum = torch.zeros(c, dtype=torch.float64)
        if tuple(mu.shape[1:]) != self.shape:
            raise UserError(f"latents of different shapes ({self.shape} then {tuple(mu.shape[1:])}); "
                            "inspect one resolution at a time")
        self.images += mu.shape[0]
        self.moments.update(mu)
        self.stats.update(mu, logvar)
        self.std_sum += torch.exp(0.5 * logvar).sum(dim=(0, 2, 3))
        self.kl_sum += kl_standard_normal(mu, logvar).sum(dim=(0, 2, 3))
        room = self.keep - sum(k.shape[0] for k in self.kept)
        if room > 0:
            self.kept.append(mu[:room].float())
        for i in range(min(self.examples - len(self.example_rows), mu.shape[0])):
            img = None if b.images is None else b.images[i]
            if img is not None:
                img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
            self.example_rows.append((b.keys[i], img, mu[i].float().numpy()))

    def report(self) -> dict:
        if self.images == 0:
            raise UserError("no latents to inspect (the data gave no image)")
        per_elem = float(self.moments.n)  # latent elements per channel
        factors = self.stats.to_dict()
        kept = torch.cat(self.kept)
        y = standard_normal_like(kept, self.seed)
        mmd = {"estimator": MMD_ESTIMATOR, "samples": kept.shape[0], "seed": self.seed,
               "sigmas": list(SIGMAS), "dim": int(np.prod(self.shape))}
        if kept.shape[0] >= 2:
            mmd["raw"] = gaussian_mmd2_unbiased(kept, y)
            normalised = (kept.double() - factors["shift_factor"]) * factors["scaling_factor"]
            mmd["normalised"] = gaussian_mmd2_unbiased(normalised, y)
        else:
            mmd["note"] = "needs at least 2 images"
        return {
            "images": self.images,
            "latent_shape": list(self.shape),
            "posterior_mean": {"per_channel": self.moments.per_channel(), "global_mean": factors["global_mean"],
                               "global_std": factors["global_std"],
                               "kurtosis": "Fisher (excess, 0 for a Gaussian), biased: scipy.stats.kurtosis defaults"},
            "posterior_std": {"mean": float(self.std_sum.sum() / (per_elem * self.shape[0])),
                              "per_channel": (self.std_sum / per_elem).tolist()},
            "kl_per_element": {"mean": float(self.kl_sum.sum() / (per_elem * self.shape[0])),
                               "per_channel": (self.kl_sum / per_elem).tolist(), "unit": "nats"},
            "mmd2_to_standard_normal": mmd,
            # Posterior-mean factors (what `sample=False` readers use) and those of sampled latents
            # z = mu + sigma * eps (what diffusers scripts feed: latent_dist.sample() * scaling_factor).
            "recommended": {k: factors[k] for k in ("scaling_factor", "shift_factor", "convention")},
            "recommended_for_sampled_latents": {k: factors["normalization"]["sample"][k]
                                                for k in ("scaling_factor", "shift_factor")},
        }

    def write_plots(self, out: Path, title: str) -> dict[str, str]:
        from litevae_cli.latents.plots import histogram_grid, latent_grid

        kept = torch.cat(self.kept).double()
        factors = self.stats.to_dict()
        chans = [kept[:, c].flatten().numpy() for c in range(kept.shape[1])]
        shift = factors["shift_factor"]
        norm = [(v - shift) * factors["scaling_factor"] for v in chans]
        paths = {
            "histograms": histogram_grid(chans, out / "latent_histograms.png",
                                         f"{title}: posterior mean per channel vs N(0,1), {kept.shape[0]} images"),
            "histograms_normalised": histogram_grid(
                norm, out / "latent_histograms_normalised.png",
                f"{title}: (z {'-' if shift >= 0 else '+'} {abs(shift):.3g}) * {factors['scaling_factor']:.3g} vs N(0,1)"),
        }
        mean, std = self.moments.mean.tolist(), self.moments.std.tolist()
        ranges = [(m - 3 * s, m + 3 * s) for m, s in zip(mean, std)]
        paths["channels"] = latent_grid(self.example_rows, out / "latent_channels.png",
                                        f"{title}: posterior mean channels (each mean +- 3 std -> black..white)", ranges)
        return {k: str(v) for k, v in paths.items()}


# ----------------------------------------------------------------------------- sources
@torch.no_grad()
def encode_images(model, source, resolution: int, batch_size: int, rt, limit: Optional[int] = None,
                  crop: str = "center", workers: int = 0, skips=None) -> Iterator[LatentBatch]:
    """Encode `source` (ImageSource) with MODEL at `resolution` (center crop) -> LatentBatches.
    Unreadable images go to `skips` (an outputs.SkipLog) when given."""
    from litevae_cli.data.loaders import make_eval_loader

    loader = make_eval_loader(source, resolution, batch_size, workers=workers, crop=crop, limit=limit)
    for batch in loader:
        if skips is not None:
            skips.extend(batch["skipped"])
        if batch["images"].shape[0] == 0:
            continue
        with rt.autocast():
            post = model.encode(rt.batch(batch["images"]))
        yield LatentBatch(post.mean.float(), post.logvar.float(), [m["key"] for m in batch["meta"]], batch["images"])


def inspect(batches: Iterable[LatentBatch], out: str | Path, title: str, keep: int = 1000, examples: int = 4,
            seed: int = 0, progress=None, total: Optional[int] = None) -> dict:
    """Run the inspector over `batches`, write the plots into `out`, return the report."""
    out = Path(out)
    insp = LatentInspector(keep=keep, examples=examples, seed=seed)
    task = progress.add_task("inspect", total=total, info="") if progress is not None else None
    for b in batches:
        insp.update(b)
        if progress is not None:
            progress.update(task, advance=b.mean.shape[0], info=f"{insp.images} images")
    report = insp.report()
    report["plots"] = insp.write_plots(out, title)
    return report


def _shard_input_image(meta: dict) -> Optional[torch.Tensor]:
    """The encoded input re-made from a shard record (folder/sample sources only), or None."""
    from litevae_cli.data import eval_transform, load_image

    src = meta.get("source")
    if not src or not Path(src).is_file() or str(src).endswith((".tar", ".tar.gz", ".tgz")):
        return None
    try:
        return eval_transform(load_image(src), int(meta["resolution"]), meta.get("crop", "center"))[0]
    except Exception:  # noqa: BLE001 - the picture is a nicety; the statistics do not need it
        return None


def read_shards(latents: str, batch_size: int = 64, limit: Optional[int] = None,
                examples: int = 4) -> Iterator[LatentBatch]:
    """LatentBatches from encode-dataset shards (a directory of latents-*.tar or a brace pattern)."""
    import braceexpand

    from litevae_cli.latents.reader import iter_moments, list_shards

    urls = list_shards(latents) if Path(latents).is_dir() else [
        u for u in braceexpand.braceexpand(str(latents)) if Path(u).is_file()]
    if not urls:
        raise UserError(f"no latent shards (latents-*.tar) at {latents}")
    pending, seen = [], 0
    for key, moments, meta in iter_moments(urls):
        if limit is not None and seen >= limit:
            break
        pending.append((key, moments, _shard_input_image(meta) if seen < examples else None))
        seen += 1
        if len(pending) == batch_size:
            yield _shard_batch(pending)
            pending = []
    if pending:
        yield _shard_batch(pending)


def _shard_batch(items) -> LatentBatch:
    mean, logvar = torch.stack([m for _, m, _ in items]).chunk(2, dim=1)
    images = [im for _, _, im in items]
    return LatentBatch(mean, logvar.clamp(*LOGVAR_RANGE), [k for k, _, _ in items], images)


# ----------------------------------------------------------------------------- the command's work
def inspect_latents(rt, out: str | Path, *, model: Optional[str] = None, data: Optional[str] = None,
                    latents: Optional[str] = None, resolution: int | str | None = None, limit: Optional[int] = None,
                    mmd_samples: int = 1000, examples: int = 4, seed: int = 0, batch_size: Optional[int] = None,
                    use_ema: bool = True, log=print) -> dict:
    """`litevae inspect-latents`: MODEL encoding `data` on the runtime `rt`, or the `latents` shards of
    encode-dataset; the outputs are checked first. Returns the report with what was inspected; the
    plots are in `out` (and, with `data`, the unreadable images in OUT/skipped.txt). Defaults: resolution
    256, batch DEFAULT_BATCH_SIZE."""
    from litevae_cli.files.model_file import load_autoencoder
    from litevae_cli.data import parse_resolution, resolve_source
    from litevae_cli.data.loaders import require_readable
    from litevae_cli.files.outputs import SKIPPED_NAME, SkipLog, check_out_dir, writing
    from litevae_cli.jobs.progress import make_progress

    if latents is not None and (model is not None or data is not None):
        raise UserError("give either --latents, or MODEL with --data, not both")
    if latents is None and (model is None or data is None):
        raise UserError("give MODEL and --data (images to encode), or --latents DIR (encode-dataset shards)")
    resolution = parse_resolution(resolution)
    batch_size = batch_size or DEFAULT_BATCH_SIZE
    out = check_out_dir(out)
    if latents is not None:
        with make_progress() as progress:
            report = inspect(read_shards(latents, batch_size, limit, examples), out, Path(latents).name or str(latents),
                             mmd_samples, examples, seed, progress)
        return {"latents": str(latents), **report}
    source = resolve_source(data)
    require_readable(source)
    loaded = load_autoencoder(model, use_ema=use_ema)
    net = rt.place(loaded.model).eval()
    total = min(len(source), limit or len(source)) if source.indexable else None
    meta = {"model": loaded.report(), "data": str(data), "resolution": resolution}
    log(f"model: {loaded.describe()}")
    for note in source.notes:
        log(note)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    skips = SkipLog(out / SKIPPED_NAME, log)
    with make_progress() as progress:
        batches = encode_images(net, source, resolution, batch_size, rt, limit, skips=skips)
        report = inspect(batches, out, f"{loaded.spec.encoder} nz={loaded.spec.nz} @{resolution}", mmd_samples,
                         examples, seed, progress, total)
    if skips.count:
        log(skips.summary())
    return {**meta, "skipped": skips.count, **report}
