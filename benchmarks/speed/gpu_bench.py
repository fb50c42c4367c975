"""GPU-day benchmark (issue 16 item 4b): LiteVAE-B against the SD-VAE encoder, and the B recipe's train steps.

On one CUDA device, in one process, with the toolkit's own runtime (`with litevae_cli.runtime.open(...)`:
placement, autocast, channels_last on CUDA, cuDNN/TF32 settings left at PyTorch's defaults as training leaves them):
1. Encoder img/s and peak memory at 256 px, batch 32, bf16 autocast, inference mode (P Table 3's setting):
   litevae-b against sd-vae-encoder, both nz=4 (the SD 1.x latent width), random init. The peer is the
   registry's sd-vae-encoder, the SD 1.x encoder architecture with its quant conv (34.16 M); the CPU tables
   in BENCHMARKS.md use diffusers' AutoencoderKL of the same configuration, which this machine may lack.
   The two are timed interleaved per repeat (`harness.time_interleaved`); the ratio is taken pair by pair.
   Peak memory = the most CUDA memory allocated during one forward, above what the weights and input hold.
2. Train-step img/s of phase A (preset b-pretrain: 128 px, batch 16, no discriminator) and phase B
   (b-finetune: 256 px, batch 16, unet-disc-s and the adversarial term on from step 0), both with LPIPS-VGG,
   through the training loop's own `training.loop.train_step` (forward, losses, backward, Adam, discriminator step,
   EMA when on). If vgg16-397923af.pth is not on disk the VGG backbone is randomly initialised: the cost is
   the same, the loss value is not, and the output says which was used.
Writes OUT/gpu_bench.json and OUT/gpu_bench.md (a table that drops into BENCHMARKS.md).

--dry-run runs the same code on the CPU with the tiny registered variants at 32 px, batch 2, one repeat: it
checks the plumbing in `make test`; its figures mean nothing and the table says so.

    python benchmarks/speed/gpu_bench.py --out bench-results/gpu
    python benchmarks/speed/gpu_bench.py --dry-run --out /tmp/gpu-dry
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
from harness import log, pair_ratio, stats, time_interleaved


@dataclass
class Setting:
    """What is measured: the real sizes on a GPU, tiny stand-ins for --dry-run."""

    device: str
    precision: str  # bf16 on the GPU; fp32 for the dry run (the CPU emulates bf16 slowly)
    encoders: tuple[str, str]  # (litevae, peer)
    enc_resolution: int
    enc_batch: int
    train_batch: int
    reps: int
    warmup: int
    iters: int  # calls per timed repeat
    overrides: list[str] = field(default_factory=list)  # applied to both presets
    phase_b_overrides: list[str] = field(default_factory=list)


GPU = Setting("cuda", "bf16", ("litevae-b", "sd-vae-encoder"), 256, 32, 16, reps=10, warmup=3, iters=5)
DRY = Setting("cpu", "fp32", ("litevae-tiny", "sd-vae-encoder-tiny"), 32, 2, 2, reps=1, warmup=0, iters=1,
              overrides=["model.encoder=litevae-tiny", "model.decoder=smc-decoder-tiny", "model.nz=4",
                         "data.resolution=32", "loss.lpips_net=alex"],  # AlexNet: builds in half VGG's time
              phase_b_overrides=["discriminator.name=unet-disc-tiny", "data.resolution=64"])  # UNet D: 64 px min
NZ_ENCODER = 4  # SD 1.x latent channels, as in encoder_bench.py


def sync(rt) -> None:
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)


def peak_mib(rt, fn) -> float | None:
    """CUDA memory allocated at the peak of `fn()` above what was allocated before it; None off CUDA."""
    if rt.device.type != "cuda":
        fn()
        return None
    sync(rt)
    torch.cuda.reset_peak_memory_stats(rt.device)
    base = torch.cuda.memory_allocated(rt.device)
    fn()
    sync(rt)
    return (torch.cuda.max_memory_allocated(rt.device) - base) / 2**20


def _input(rt, batch: int, resolution: int, on_device: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1
    if not on_device:  # the train step moves its batch itself, from pinned memory as the loader gives it
        return x.pin_memory() if rt.device.type == "cuda" else x
    return rt.batch(x, channels_last=True)


def bench_encoders(rt, s: Setting) -> dict:
    from litevae_cli.models import create_model

    x = _input(rt, s.enc_batch, s.enc_resolution, on_device=True)
    nets = {}
    for name in s.encoders:
        torch.manual_seed(0)
        nets[name] = rt.place(create_model(name, nz=NZ_ENCODER).eval(), channels_last=True)

    def forward(net, n):
        def run():
            with torch.inference_mode(), rt.autocast():
                for _ in range(n):
                    net(x)
        return run

    log(f"encoders {', '.join(nets)}: {s.enc_resolution} px, batch {s.enc_batch}, {rt.precision}, "
        f"{s.warmup} warm-up + {s.reps} x {s.iters} calls each")
    rates = time_interleaved({k: forward(m, s.iters) for k, m in nets.items()}, s.reps, s.warmup,
                             float(s.enc_batch * s.iters), sync=lambda: sync(rt))
    lite, peer = s.encoders
    rows = [{"model": k, "img_s": stats(v), "peak_mib": peak_mib(rt, forward(nets[k], 1)),
             "params_m": sum(p.numel() for p in nets[k].parameters()) / 1e6} for k, v in rates.items()]
    return {"resolution": s.enc_resolution, "batch": s.enc_batch, "precision": rt.precision, "nz": NZ_ENCODER,
            "rows": rows, "ratio_lite_vs_peer": pair_ratio(rates[lite], rates[peer])}


def share_lpips() -> None:
    """Build each frozen LPIPS network once for both phases (VGG-16's construction takes seconds)."""
    import functools

    from litevae_cli.metrics import weights

    weights.build_lpips = functools.lru_cache(maxsize=None)(weights.build_lpips)


def bench_train_step(rt, s: Setting, preset: str, extra: list[str]) -> dict:
    from litevae_cli.config import load_config
    from litevae_cli.metrics.weights import lpips_available
    from litevae_cli.training.loop import train_step
    from litevae_cli.training.losses import GeneratorLoss
    from litevae_cli.training.state import build_train_state

    cfg = load_config(preset, [f"train.batch_size={s.train_batch}", f"train.precision={s.precision}",
                               *s.overrides, *extra])
    random_backbone = not lpips_available(cfg.loss.lpips_net)
    lpips = (f"LPIPS-{cfg.loss.lpips_net.upper()} weight {cfg.loss.lpips}, "
             + ("RANDOM-init backbone (weights file absent: same cost, loss value meaningless)" if random_backbone
                else "pretrained backbone from disk"))
    loss_fn = rt.place(GeneratorLoss(cfg.loss, cfg.discriminator.loss, lpips_random_backbone=random_backbone))
    torch.manual_seed(cfg.train.seed)
    state = build_train_state(rt, cfg)
    x = _input(rt, s.train_batch, cfg.data.resolution, on_device=False)
    results = []

    def steps(n):
        def run():
            for _ in range(n):
                results.append(train_step(rt, cfg, state, loss_fn, [x]))
        return run

    name = f"{preset}: {cfg.model.encoder} + {cfg.model.decoder}, disc {cfg.discriminator.name}"
    log(f"train step {name}, {cfg.data.resolution} px, batch {s.train_batch}, {rt.precision}; {lpips}")
    rates = time_interleaved({name: steps(s.iters)}, s.reps, s.warmup, float(s.train_batch * s.iters),
                             sync=lambda: sync(rt))
    peak = peak_mib(rt, steps(1))
    return {"preset": preset, "phase": cfg.phase, "model": name, "resolution": cfg.data.resolution,
            "batch": s.train_batch, "precision": rt.precision, "lpips": lpips, "random_lpips_backbone": random_backbone,
            "img_s": stats(rates[name]), "peak_mib": peak, "steps_run": len(results),
            "nonfinite_steps": sum(r.nonfinite for r in results)}


def machine(rt) -> dict:
    info = {"device": str(rt.device), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if rt.device.type == "cuda":
        props = torch.cuda.get_device_properties(rt.device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, tf32_conv=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    return info


def _mib(v) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def markdown(doc: dict) -> str:
    m, enc = doc["machine"], doc["encoders"]
    head = ("**DRY RUN on the CPU with tiny stand-in models: these figures mean nothing.**\n\n" if doc["dry_run"]
            else "")
    lines = [head + f"Machine: {m.get('gpu', m['device'])}, torch {m['torch']}, CUDA {m['cuda']}; "
             f"`python benchmarks/speed/gpu_bench.py` ({doc['date']}). Medians of {doc['reps']} repeats "
             "(min-max in brackets).", "",
             f"Encoders at {enc['resolution']} px, batch {enc['batch']}, {enc['precision']} autocast, nz {enc['nz']} "
             "(P Table 3's setting):", "",
             "| encoder | params (M) | img/s | peak memory above weights (MiB) |", "|---|---|---|---|"]
    for r in enc["rows"]:
        i = r["img_s"]
        lines.append(f"| {r['model']} | {r['params_m']:.2f} | {i['median']:,.0f} ({i['min']:,.0f}-{i['max']:,.0f}) "
                     f"| {_mib(r['peak_mib'])} |")
    ratio = enc["ratio_lite_vs_peer"]
    lines += ["", f"{enc['rows'][0]['model']} / {enc['rows'][1]['model']} throughput: **{ratio['median']:.2f}x** "
              f"({ratio['min']:.2f}-{ratio['max']:.2f}, pair by pair).", "",
              "| train step | px | batch | img/s | peak memory (MiB) | LPIPS |", "|---|---|---|---|---|---|"]
    for t in doc["train"]:
        i = t["img_s"]
        lines.append(f"| {t['model']} | {t['resolution']} | {t['batch']} | {i['median']:,.1f} "
                     f"({i['min']:,.1f}-{i['max']:,.1f}) | {_mib(t['peak_mib'])} | {t['lpips']} |")
    return "\n".join(lines) + "\n"


def measure(rt, s: Setting, dry_run: bool) -> dict:
    t0 = time.perf_counter()
    doc = {"section": "gpu", "dry_run": dry_run, "date": time.strftime("%Y-%m-%d"), "reps": s.reps,
           "machine": machine(rt), "encoders": bench_encoders(rt, s),
           "train": [bench_train_step(rt, s, "b-pretrain", []),
                     bench_train_step(rt, s, "b-finetune", s.phase_b_overrides)]}
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    return doc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_bench.json and gpu_bench.md")
    p.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, one repeat: plumbing only")
    p.add_argument("--reps", type=int, default=None, help="timed repeats (default 10; dry run 1)")
    args = p.parse_args()
    from litevae_cli import runtime
    from litevae_cli.errors import UserError

    s = DRY if args.dry_run else GPU
    if args.dry_run:
        torch.set_num_threads(1)  # tiny models run fastest single-threaded, and the test machine is shared
    share_lpips()
    if args.reps:
        s.reps = args.reps
    try:
        with runtime.open(s.device, s.precision, distributed=False) as rt:
            doc = measure(rt, s, args.dry_run)
    except UserError as err:
        raise SystemExit(f"error: {err}" + ("" if args.dry_run else " (use --dry-run to check the script on a CPU)"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_bench.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    table = markdown(doc)
    (args.out / "gpu_bench.md").write_text(table)
    print(table, flush=True)
    log(f"wrote {args.out / 'gpu_bench.json'} and {args.out / 'gpu_bench.md'} in {doc['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
