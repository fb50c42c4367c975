"""Reconstruction evaluation: the field's protocol (rFID, LPIPS, PSNR, SSIM) and the eval loop.

Owns `litevae eval`'s work: option parsing/validation, the up-front weight check, the protocol text,
and one pass over the data per resolution. The protocol (the one the field uses, e.g. P Table 1):
1. Originals: resize the shorter side to R (PIL bicubic), center crop RxR (`--crop center`, or
   guided-diffusion's `adm` crop), quantised to uint8 as loaded.
2. Reconstruction = decode(posterior mean), clamped to [-1, 1] and quantised to uint8 BEFORE any metric
   (`image_metrics.to_uint8`); every metric sees the same two uint8 images.
3. PSNR per image on uint8, peak 255, then averaged over images (`image_metrics.psnr_uint8`; an image
   reconstructed exactly has an infinite PSNR, reported as the documented cap).
4. SSIM on [0,1] (uint8 / 255), data_range 1, scikit-image's Gaussian-weighted SSIM (sigma 1.5,
   use_sample_covariance=False) in torch, validated against skimage (`image_metrics.ssim`), per image,
   averaged; colour channels averaged.
5. LPIPS (the `lpips` package, v0.1, AlexNet by default; the output names the net) on the uint8 images
   mapped back to [-1, 1], per image, averaged.
6. rFID (`fid.py`): clean-fid clean mode between the cropped originals and their reconstructions.
Several resolutions give one row each (P's resolution-robustness experiment). Weights needed by the
asked metrics are all located before anything is loaded or run; PSNR and SSIM need none; a source with
no readable image stops before the model loads, and a pass that read no image is an error, never a
row of NaN. Unreadable images are skipped and returned by name (`skipped_files`). A stop signal or a
dead loader worker ends the pass before the next batch with `Stopped` (nothing is reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.config import LPIPS_NETS
from litevae_cli.data import CROPS, check_crop, parse_resolutions, resolve_source, to_model_range
from litevae_cli.data.loaders import make_eval_loader, require_readable
from litevae_cli.errors import Stopped, UserError
from litevae_cli.metrics import image as image_metrics
from litevae_cli.metrics.fid import RFID, load_inception
from litevae_cli.metrics.weights import build_lpips, find_weight
from litevae_cli.jobs.progress import make_progress
from litevae_cli.runtime import all_reduce_sum, gather_objects
from litevae_cli.runtime.compiled_models import compile_models
from litevae_cli.jobs.stopping import StopSignal

METRICS = ("rfid", "lpips", "psnr", "ssim")


@dataclass
class EvalOptions:
    metrics: list[str]
    resolutions: list[int] = field(default_factory=lambda: [256])
    batch_size: int = 16
    limit: Optional[int] = None
    crop: str = "center"  # center | adm
    lpips_net: str = "alex"  # alex | vgg
    weights_dir: Optional[Path] = None
    use_ema: bool = True
    workers: int = 0
    weights: Optional[dict[str, Path]] = None  # the located weight files (`resolve_options`); None: run_eval looks
    download: bool = False  # --download-weights: a Hub id as MODEL is fetched and verified too (files.hub)
    compile: bool = False  # --compile: the encoder, decoder and LPIPS compiled in place (models.compiling)


def resolve_options(metrics: str, resolution: str | None = None, download_weights: bool = False, **options) -> EvalOptions:
    """`--metrics` and `--resolution` parsed, every option checked and every weight file the metrics need
    located (fetched and verified here when `download_weights`, `--download-weights`): all of it before
    the runtime opens or a model loads."""
    options = {k: v for k, v in options.items() if v is not None}  # None: EvalOptions' default
    opts = EvalOptions(metrics=parse_metrics(metrics), resolutions=parse_resolutions(resolution),
                       download=download_weights, **options)
    check_options(opts)
    opts.weights = locate_weights(required_weights(opts.metrics, opts.lpips_net), opts.weights_dir, download_weights)
    return opts


def parse_metrics(text: str) -> list[str]:
    """'rfid,lpips' -> ['rfid', 'lpips'] in the canonical order; unknown names are a UserError."""
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UserError(f"--metrics: unknown {', '.join(unknown) or '(empty)'}; choose from {','.join(METRICS)}")
    return [m for m in METRICS if m in names]


def check_options(opts: EvalOptions) -> None:
    check_crop(opts.crop)
    if opts.lpips_net not in LPIPS_NETS:
        raise UserError(f"--lpips-net must be {' or '.join(LPIPS_NETS)}, got {opts.lpips_net!r}")


def required_weights(metrics: list[str], lpips_net: str = "alex") -> list[str]:
    """weights.WEIGHTS keys the asked metrics need (PSNR and SSIM need none)."""
    return [key for metric, key in (("lpips", lpips_net), ("rfid", "inception")) if metric in metrics]


def locate_weights(keys: list[str], weights_dir=None, download: bool = False) -> dict[str, Path]:
    """Every needed file, or ONE UserError listing each missing file (name, URL, where to put it)."""
    found, missing = {}, []
    for key in keys:
        try:
            found[key] = find_weight(key, weights_dir, download)
        except UserError as err:
            missing.append(str(err))
    if missing:
        raise UserError("; ".join(missing) + " (no work was done; PSNR and SSIM need no weights)")
    return found


def protocol(opts: EvalOptions) -> dict:
    """The protocol as data (JSON) and as the lines the table prints."""
    p = {
        "crop": CROPS[opts.crop],
        "reconstruction": "decode(posterior mean), clamp to [-1,1], quantise to uint8 before any metric",
        "psnr": f"per image on uint8, peak 255, averaged; exact reconstructions capped at "
                f"{image_metrics.PSNR_CAP_DB:g} dB",
        "ssim": "per image on [0,1], data_range 1, Gaussian-weighted (sigma 1.5) as skimage, averaged",
        "lpips": f"lpips package v0.1, net={opts.lpips_net}, on the uint8 images mapped to [-1,1], averaged",
        "rfid": "clean-fid clean mode (PIL bicubic to 299, TorchScript Inception pool3), originals vs "
                "reconstructions with the same crop",
        "weights": "EMA weights when the checkpoint has them" if opts.use_ema else "raw (non-EMA) weights (--no-ema)",
    }
    return {k: v for k, v in p.items() if k not in METRICS or k in opts.metrics}


class MetricAccumulator:
    """Sums of per-image PSNR/SSIM/LPIPS (float64) and the rFID feature statistics for one resolution."""
    def __init__(self, metrics: list[str], lpips_model=None, rfid_factory: Optional[Callable] = None):
        self.metrics = metrics
        self.lpips_model = lpips_model
        self.rfid = rfid_factory() if "rfid" in metrics else None
        self.sums = {m: torch.zeros((), dtype=torch.float64) for m in metrics if m != "rfid"}
        self.count = torch.zeros((), dtype=torch.float64)
        self.psnr_capped = torch.zeros((), dtype=torch.float64)  # images reconstructed exactly

    @torch.no_grad()
    def update(self, real_u8: torch.Tensor, recon_u8: torch.Tensor) -> None:

        self.count += real_u8.shape[0]
        if "psnr" in self.sums:
            psnr = image_metrics.psnr_uint8(real_u8, recon_u8).double().cpu()
            self.sums["psnr"] += psnr.sum()
            self.psnr_capped += (psnr >= image_metrics.PSNR_CAP_DB).sum()
        if "ssim" in self.sums:
            a, b = real_u8.float() / 255.0, recon_u8.float() / 255.0
            self.sums["ssim"] += image_metrics.ssim(a, b).double().sum().cpu()
        if "lpips" in self.sums:
            a, b = real_u8.float() / 127.5 - 1.0, recon_u8.float() / 127.5 - 1.0
            self.sums["lpips"] += self.lpips_model(a, b).double().sum().cpu()
        if self.rfid is not None:
            self.rfid.update(real_u8.cpu(), recon_u8.cpu())

    def compute(self, all_reduce_sum=lambda t: t) -> dict:
        n = float(all_reduce_sum(self.count))
        out = {m: float(all_reduce_sum(s)) / n if n else float("nan") for m, s in self.sums.items()}
        if "psnr" in out:
            out["psnr_capped_images"] = int(all_reduce_sum(self.psnr_capped))
        if self.rfid is not None:
            try:
                out["rfid"] = self.rfid.compute(all_reduce_sum)
            except ValueError as err:  # fewer than 2 images, or a complex sqrtm on a degenerate set
                out["rfid"] = float("nan")
                out["rfid_note"] = str(err).splitlines()[0]
        return {"images": int(n), **out}


@torch.no_grad()
def reconstruct_uint8(model, images: torch.Tensor, rt) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals uint8, reconstructions uint8) of a batch (uint8 or float in [-1, 1]); recon = decode(mean)."""
    x = to_model_range(rt.batch(images))
    with rt.autocast():
        rec = model.decode(model.encode(x).mode())
    if rec.shape != x.shape:
        raise UserError(f"the model maps {tuple(x.shape[1:])} to {tuple(rec.shape[1:])}; "
                        f"choose a resolution it reconstructs at the same size")
    return image_metrics.to_uint8(x.float()), image_metrics.to_uint8(rec.float())


def evaluate_resolution(model, source, resolution: int, opts: EvalOptions, rt, acc: MetricAccumulator,
                        progress=None, signals=None) -> dict:
    """One pass over `source` at `resolution`; returns the row (metrics averaged over all ranks) with
    every rank's unreadable images under `skipped_files`. `signals`: a StopSignal to obey."""
    loader = make_eval_loader(source, resolution, opts.batch_size, workers=opts.workers, crop=opts.crop,
                              rank=rt.rank, world_size=rt.world_size, limit=opts.limit, uint8=True)
    total = None
    if source.indexable:
        n = len(source) if opts.limit is None else min(opts.limit, len(source))
        total = len(range(rt.rank, n, rt.world_size))
    task = progress.add_task(f"eval @{resolution}", total=total, info="") if progress is not None else None
    skipped, upscaled = [], 0
    for batch in signals.batches(loader) if signals is not None else loader:
        skipped += batch["skipped"]
        upscaled += sum(min(m["orig_size"]) < resolution for m in batch["meta"])
        if batch["images"].shape[0]:
            acc.update(*reconstruct_uint8(model, batch["images"], rt))
        if progress is not None:
            progress.update(task, advance=batch["images"].shape[0] + len(batch["skipped"]),
                            info=f"{int(acc.count)} images")

    def reduce(t: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(rt, t)  # float64 on the host, reduced on the device (identity in one process)

    if signals is not None and signals.requested:
        raise Stopped(f"{signals.reason}: eval stopped at {resolution} px after {int(acc.count)} images; "
                      "no result was reported", signals.exit_code)
    row = {"resolution": resolution, **acc.compute(reduce)}
    row["skipped"] = int(reduce(torch.tensor(float(len(skipped)), dtype=torch.float64)))
    row["skipped_examples"] = [f"{k}: {r}" for k, r in skipped[:5]]
    row["upscaled"] = int(reduce(torch.tensor(float(upscaled), dtype=torch.float64)))  # short side under R
    if row["images"] == 0:
        raise UserError(f"no image of {source.spec} could be read at {resolution} px ({row['skipped']} skipped"
                        + (f", e.g. {row['skipped_examples'][0]})" if skipped else ")"))
    row["skipped_files"] = [pair for rank in gather_objects(rt, skipped) for pair in rank]
    return row


def run_eval(model_arg, data: str, opts: EvalOptions, rt, *, lpips_model=None, feature_fn=None,
             feature_dim: int = 2048, resize=None, progress_enabled: bool = True) -> dict:
    """Check options and weights, THEN load the model and evaluate each resolution; returns the report.

    lpips_model / feature_fn (+ feature_dim, resize) are injection points for tests: when given, the
    corresponding weight file is not looked up.
    """
    check_options(opts)
    needed = [m for m in opts.metrics if not ((m == "lpips" and lpips_model is not None)
                                              or (m == "rfid" and feature_fn is not None))]
    paths = opts.weights if opts.weights is not None else locate_weights(required_weights(needed, opts.lpips_net),
                                                                         opts.weights_dir)  # before any work
    source = resolve_source(data)
    require_readable(source)
    for note in source.notes:
        rt.print(note)
    loaded = load_autoencoder(model_arg, use_ema=opts.use_ema, map_location="cpu", download=opts.download)
    model = rt.place(loaded.model).eval()
    if "lpips" in opts.metrics and lpips_model is None:
        lpips_model = build_lpips(opts.lpips_net, opts.weights_dir)
    if lpips_model is not None:
        lpips_model = rt.place(lpips_model).eval()
    if "rfid" in opts.metrics and feature_fn is None:
        feature_fn = load_inception(paths["inception"], rt.device)
    if opts.compile:
        record = compile_models(rt.device, model.encoder, model.decoder, lpips_model)
        rt.print(f"compiled ({record['backend']}, GroupNorm: {record['group_norm']['kernels']}): "
                 "the first batch of each resolution also captures its graph")

    def rfid_factory():
        return RFID(feature_fn, feature_dim, resize)

    rows, skipped = [], {}
    with StopSignal() as signals, make_progress(rt.is_main and progress_enabled) as progress:
        for res in opts.resolutions:
            acc = MetricAccumulator(opts.metrics, lpips_model, rfid_factory)
            rows.append(evaluate_resolution(model, source, res, opts, rt, acc, progress, signals))
            skipped.update(rows[-1].pop("skipped_files"))  # the same files at every resolution
    return {
        "model": loaded.report(),
        "data": {"spec": str(data), "limit": opts.limit, "crop": opts.crop},
        "metrics": opts.metrics,
        "protocol": protocol(opts),
        "runtime": {"device": str(rt.device), "precision": rt.precision, "world_size": rt.world_size},
        "results": rows,
        "skipped_files": sorted(skipped.items()),
    }
