"""Training-loader throughput on JPEGs against the decode-only limit of the same machine (issue 26.6).

    .venv/bin/python benchmarks/speed/loader_bench.py --images 300 --workers 1 2 --json out.json

Writes `--images` synthetic photos (sides 512-1024 px, smooth colour fields plus noise, JPEG quality 90)
into a temporary folder, then measures:
  * decode-only: a plain PIL `Image.open(p).convert("RGB")` loop over the files in this process: what
    one worker could reach if decoding were all it did (full-size decode, no crop, no tensor);
  * the training loader (`make_train_loader`: rescale U[0.5, 1], random crop, flip, uint8 batches of
    `--batch`) at each `--sizes` x `--workers`, with the JPEG draft on and off: total img/s and img/s per
    worker (workers=0: the main process is the one worker).
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


def loader_rate(folder: str, resolution: int, workers: int, draft: bool, batch: int, batches: int, reps: int) -> dict:
    from litevae_cli.data.loaders import make_train_loader

    it = iter(make_train_loader(folder, resolution, batch, workers=workers, seed=0, draft=draft))
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
    args = p.parse_args()
    if args.quick:
        args.images, args.batches = min(args.images, 120), min(args.batches, 4)
    setup_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        log(f"writing {args.images} JPEGs (512-1024 px) into {tmp}")
        paths = write_jpegs(Path(tmp), args.images)
        mp = float(np.mean([np.prod(Image.open(q).size) for q in paths])) / 1e6
        log("decode-only loop")
        limit = decode_only(paths, args.reps)
        log(f"decode-only: {limit['median']:.1f} img/s")
        rows = []
        for res, w, draft in itertools.product(args.sizes, args.workers, (True, False)):
            r = loader_rate(tmp, res, w, draft, args.batch, args.batches, args.reps)
            rows.append({"resolution": res, "workers": w, "draft": draft, **r,
                         "vs_decode_limit": r["per_worker"]["median"] / limit["median"]})
            log(f"{res} px, {w} workers, draft {'on' if draft else 'off'}: {r['total']['median']:.1f} img/s total, "
                f"{r['per_worker']['median']:.1f} per worker")
    write_json(args.json, {"section": "loader", "images": args.images, "mean_megapixels": mp, "batch": args.batch,
                           "batches_per_window": args.batches, "reps": args.reps, "decode_only": limit, "rows": rows,
                           "machine": machine_info(args.threads)})


if __name__ == "__main__":
    main()
