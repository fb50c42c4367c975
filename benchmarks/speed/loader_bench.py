"""Training-loader throughput on JPEGs against the decode-only limit of the same machine (issue 26.6).

    .venv/bin/python benchmarks/speed/loader_bench.py --images 300 --workers 1 2 --json out.json

Writes `--images` synthetic photos (sides 512-1024 px, smooth colour fields plus noise, JPEG quality 90)
into a temporary folder, then measures:
  * decode-only: a plain PIL `Image.open(p).convert("RGB")` loop over the files in this process: what
    one worker could reach if decoding were all it did (full-size decode, no crop, no tensor);
  * the training loader (`make_train_loader`: rescale s ~ U[`--rescale`] (default [0.5, 1], the presets'),
    random crop, flip, uint8 batches of `--batch`) at each `--sizes` x `--workers` x `--rescale-ranges`,
    with the JPEG draft on and off: total img/s and img/s per worker (workers=0: the main process is the
    one worker), and the share of crops the draft applies to (it needs s <= 1/2: a crop downscaled 2x or
    more, so with the default range it almost never fires).
Each figure is median (min-max) over `--reps` timed windows of `--batches` batches, after one warm-up
window (worker start-up and first decodes land there). A shared machine's load stretches every figure;
compare draft on/off and the loader with the decode limit measured in the same run.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from harness import base_parser, log, machine_info, setup_threads, stats, write_json  # noqa: E402


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(512, 1025, 2))
        y, x = np.mgrid[0:h, 0:w].astype(np.float32) / max(w, h)
        f = rng.uniform(2, 9, 3)
        base = np.stack([np.sin(f[c] * x + c) * np.cos(f[(c + 1) % 3] * y - c) for c in range(3)], -1) * 90 + 128
        img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(str(path))
    return paths


def decode_only(paths: list[str], reps: int) -> dict:
    rates = []
    for r in range(reps + 1):  # the first pass warms the page cache
        t0 = time.perf_counter()
        for p in paths:
            with Image.open(p) as im:
                im.convert("RGB")
        if r:
            rates.append(len(paths) / (time.perf_counter() - t0))
    return stats(rates)


def draft_share(sizes: list[tuple[int, int]], resolution: int, rescale: tuple[float, float], draws: int = 20) -> float:
    """The share of training crops drafted (decoded at 1/2 or less), from the crop draws themselves."""
    from litevae_cli.data.transforms import _Planner

    hits = 0
    for i, size in enumerate(sizes):
        for d in range(draws):
            hits += _Planner(resolution, np.random.default_rng([i, d]), rescale, True)(size) is not None
    return hits / (len(sizes) * draws)


def loader_rate(folder: str, resolution: int, workers: int, draft: bool, batch: int, batches: int, reps: int,
                rescale: tuple[float, float]) -> dict:
    from litevae_cli.data.loaders import make_train_loader

    it = iter(make_train_loader(folder, resolution, batch, workers=workers, seed=0, draft=draft, rescale=rescale))
    rates = []
    for r in range(reps + 1):
        t0 = time.perf_counter()
        n = sum(b["images"].shape[0] for b in itertools.islice(it, batches))
        if r:  # window 0 is the warm-up
            rates.append(n / (time.perf_counter() - t0))
    del it
    per = max(1, workers)
    return {"total": stats(rates), "per_worker": stats([x / per for x in rates])}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=8, help="batches per timed window")
    p.add_argument("--rescale-ranges", nargs="+", default=["0.5:1", "0.125:0.5"],
                   help="rescale ranges lo:hi (default: the presets' 0.5:1, and 0.125:0.5 where the draft fires)")
    args = p.parse_args()
    if args.quick:
        args.images, args.batches = min(args.images, 120), min(args.batches, 4)
    setup_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        log(f"writing {args.images} JPEGs (512-1024 px) into {tmp}")
        paths = write_jpegs(Path(tmp), args.images)
        sizes = [Image.open(q).size for q in paths]
        mp = float(np.mean([w * h for w, h in sizes])) / 1e6
        log("decode-only loop")
        limit = decode_only(paths, args.reps)
        log(f"decode-only: {limit['median']:.1f} img/s")
        rows = []
        ranges = [tuple(float(v) for v in r.split(":")) for r in args.rescale_ranges]
        for rescale, res, w, draft in itertools.product(ranges, args.sizes, args.workers, (True, False)):
            r = loader_rate(tmp, res, w, draft, args.batch, args.batches, args.reps, rescale)
            share = draft_share(sizes, res, rescale) if draft else 0.0
            rows.append({"rescale": list(rescale), "resolution": res, "workers": w, "draft": draft, "drafted": share,
                         **r, "vs_decode_limit": r["per_worker"]["median"] / limit["median"]})
            log(f"rescale {rescale}, {res} px, {w} workers, draft {'on' if draft else 'off'} ({share:.0%} drafted): "
                f"{r['total']['median']:.1f} img/s total, {r['per_worker']['median']:.1f} per worker")
    write_json(args.json, {"section": "loader", "images": args.images, "mean_megapixels": mp, "batch": args.batch,
                           "batches_per_window": args.batches, "reps": args.reps, "decode_only": limit, "rows": rows,
                           "machine": machine_info(args.threads)})


if __name__ == "__main__":
    main()
