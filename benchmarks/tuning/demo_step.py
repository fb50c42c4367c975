"""The demo's train step on this CPU: achieved GFLOP/s against the machine's fp32 convolution peak.

Measures, in one process and one run (so the figures are comparable):
- peak: GFLOP/s of a plain fp32 3x3 convolution forward+backward (64 -> 64 channels, 64x64, batch 16),
  the best case for this CPU's convolution kernels;
- the `demo` preset's train step, timed through `training.loop.train_step` itself (autoencoder forward,
  every loss term, backward, Adam, EMA), at its batch and crop size, in fp32 and in bf16 autocast, each in
  the memory layout the runtime picks for it (NCHW for fp32 on a CPU, channels_last for bf16); FLOPs counted
  with torch.utils.flop_counter over the whole step, so GFLOP/s = counted FLOPs / wall time;
- the data side: one batch of 4 random crops with the sample photos decoded every time vs cached.

    python benchmarks/tuning/demo_step.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from litevae_cli.config import load_config
from litevae_cli.runtime import setup_runtime
from litevae_cli.training.loop import train_step
from litevae_cli.training.state import build_train_state
from litevae_cli.data.sources import _open, load_image, train_transform
from litevae_cli.training.losses import GeneratorLoss
from litevae_cli.data.samples import sample_files


def best_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def counted_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_peak(repeats: int) -> float:
    x = torch.randn(16, 64, 64, 64, requires_grad=True)
    w = torch.randn(64, 64, 3, 3, requires_grad=True)

    def step():
        F.conv2d(x, w, padding=1).sum().backward()

    return counted_flops(step) / best_seconds(step, repeats) / 1e9


def demo_step(repeats: int, precision: str) -> tuple[float, float]:
    cfg = load_config("demo", [f"train.precision={precision}"])
    rt = setup_runtime("cpu", precision)
    torch.manual_seed(0)
    state = build_train_state(rt, cfg)
    loss_fn = GeneratorLoss(cfg.loss)
    x = torch.rand(cfg.train.batch_size, 3, cfg.data.resolution, cfg.data.resolution) * 2 - 1

    def step():
        train_step(rt, cfg, state, loss_fn, [x])

    seconds = best_seconds(step, repeats)
    return counted_flops(step) / seconds / 1e9, cfg.train.batch_size / seconds


def data_batch(repeats: int) -> tuple[float, float]:
    paths = [p for _, p in sample_files("sample")]
    rng = np.random.default_rng(0)

    def batch(loader):
        for i in rng.integers(0, len(paths), 4):
            train_transform(loader(paths[i]), 64, rng)

    uncached = best_seconds(lambda: batch(lambda p: _open(p, p)), repeats)
    cached = best_seconds(lambda: batch(load_image), repeats)
    return uncached, cached


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = conv_peak(args.repeats)
    print(f"torch threads: {args.threads}")
    print(f"fp32 3x3 conv fwd+bwd (64->64 ch, 64x64, batch 16): {peak:.1f} GFLOP/s (the peak used below)")
    for precision in ("fp32", "bf16"):
        gflops, img_s = demo_step(args.repeats, precision)
        print(f"demo train step, {precision} (the runtime's layout): {gflops:.1f} GFLOP/s "
              f"({gflops / peak:.0%} of the conv peak), {img_s:.2f} img/s")
    uncached, cached = data_batch(args.repeats)
    print(f"data, one batch of 4 crops: decoded every time {uncached * 1e3:.1f} ms, cached {cached * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
