"""Benchmark: `encode-dataset` img/s against the raw encoder's img/s (issue 4's >= 0.9x target).

Both sides use the same model (a freshly initialised registry encoder, saved as a checkpoint), batch
size, precision, device and images:
  raw            the encoder's forward pass on the images already decoded, transformed and batched in
                 memory (on the device), timed after one warm-up batch, synchronised at the end;
  encode-dataset the library call `litevae_cli.latents.encode.encode_dataset` on a folder of the same JPEGs
                 (decode, resize/crop, host->device, encode, device->host, serialise, tar writing,
                 stats), timed by its own loop clock (model loading and hashing excluded, worker
                 start-up included).
Each side runs --repeat times, alternating, and the medians are compared. The images are random crops (JPEG, quality 95, 320..480 px) of the embedded sample photographs.

    python benchmarks/encode_throughput.py --encoder litevae-s --count 64 --batch-size 16
    python benchmarks/encode_throughput.py --encoder litevae-b --device cuda --precision bf16 --count 4096 --batch-size 64 --workers 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_images(folder: Path, count: int, seed: int = 0) -> None:
    from litevae_cli.data import load_image
    from litevae_cli.data.samples import sample_files

    photos = [load_image(p) for _, p in sample_files("sample-all")]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img = photos[i % len(photos)]
        w, h = (int(rng.integers(320, 481)) for _ in range(2))
        w, h = min(w, img.size[0]), min(h, img.size[1])
        left, top = int(rng.integers(0, img.size[0] - w + 1)), int(rng.integers(0, img.size[1] - h + 1))
        img.crop((left, top, left + w, top + h)).save(folder / f"{i:06d}.jpg", quality=95)


def raw_throughput(encoder, folder: Path, resolution: int, batch_size: int, rt) -> float:
    from litevae_cli.data import eval_transform, load_image
    from litevae_cli.runtime import use_channels_last

    xs = torch.stack([eval_transform(load_image(str(p)), resolution)[0] for p in sorted(folder.glob("*.jpg"))])
    fmt = torch.channels_last if use_channels_last(rt) else torch.contiguous_format
    batches = [b.to(rt.device).contiguous(memory_format=fmt) for b in xs.split(batch_size)]

    def sync():
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        with rt.autocast():
            encoder(batches[0])  # warm-up (allocator, cuDNN autotune)
        sync()
        t0 = time.perf_counter()
        for b in batches:
            with rt.autocast():
                post = encoder(b)
            torch.cat([post.mean, post.logvar], 1)  # the same moments tensor encode-dataset builds
        sync()
    return len(xs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="litevae-s", help="registry encoder name (litevae-s/b/m/l, sd-vae-encoder)")
    ap.add_argument("--nz", type=int, default=12)
    ap.add_argument("--count", type=int, default=64, help="images")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dtype", default="fp16", help="encode-dataset storage dtype")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each; medians are reported")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    from litevae_cli.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
    from litevae_cli.latents.encode import encode_dataset
    from litevae_cli.models import build_autoencoder
    from litevae_cli.runtime import setup_runtime

    if args.threads:
        torch.set_num_threads(args.threads)
    rt = setup_runtime(args.device, args.precision, init_distributed=False)
    torch.manual_seed(0)
    ae = build_autoencoder(args.encoder, "smc-decoder-tiny", nz=args.nz)  # the decoder is never run here
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(),
                            "model": ae.state_dict(), "ema": None, "step": 0, "config": {}}, tmp / "model.pt")
        make_images(tmp / "images", args.count)
        encoder = rt.place(ae.encoder, channels_last=True).eval()
        raws, encs = [], []
        for _ in range(args.repeat):  # alternate the two so drifting machine load hits both alike
            raws.append(raw_throughput(encoder, tmp / "images", args.resolution, args.batch_size, rt))
            res = encode_dataset(rt, str(ckpt), str(tmp / "images"), tmp / "latents", resolution=args.resolution,
                                 batch_size=args.batch_size, dtype=args.dtype, workers=args.workers, overwrite=True,
                                 log=lambda *a: None, progress_bar=False)
            encs.append(res["encoded_now"] / res["seconds"])
        raw, enc = float(np.median(raws)), float(np.median(encs))
    out = {"encoder": args.encoder, "nz": args.nz, "count": args.count, "batch_size": args.batch_size,
           "resolution": args.resolution, "precision": args.precision, "device": str(rt.device),
           "workers": args.workers, "threads": torch.get_num_threads(), "storage_dtype": args.dtype,
           "repeat": args.repeat,
           "raw_img_s": raw, "encode_dataset_img_s": enc, "ratio": enc / raw, "raw_runs": raws, "encode_runs": encs}
    print(f"{args.encoder} nz={args.nz} {args.resolution}px batch {args.batch_size} {args.precision} on {rt.device} "
          f"({torch.get_num_threads()} threads, {args.workers} workers, {args.count} images)")
    print(f"raw encoder      {raw:8.2f} img/s  (median of {' '.join(f'{r:.2f}' for r in raws)})")
    print(f"encode-dataset   {enc:8.2f} img/s  (median of {' '.join(f'{e:.2f}' for e in encs)})")
    print(f"ratio            {enc / raw:8.3f}  (target >= 0.9)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
