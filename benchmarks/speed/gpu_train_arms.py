"""The train-step arms of `gpu_bench.py`: the real `training.loop.train_step` under one set of knobs.

One arm = a fresh train state of a preset (B recipe: b-finetune, 256 px, unet-disc-s, LPIPS-VGG; phase A:
b-pretrain, 128 px) at one batch per GPU, with each knob set directly here, so the bench does not depend on
config keys that may or may not exist (where the config has them, `runtime.channels_last`,
`runtime.cudnn_benchmark` and `loss.lpips_precision`, they are set too):
- channels_last: `litevae_cli.runtime.use_channels_last` patched for the arm (models and batches), and the
  layout checked on the built model (`channels_last_effective`);
- cudnn.benchmark: `torch.backends.cudnn.benchmark`;
- LPIPS bf16: the LPIPS network under bf16 autocast instead of the loss's fp32 region;
- compile: `torch.compile` of the autoencoder ("model"), or of it, the discriminator and the LPIPS network
  ("all"); the first-call seconds, which hold the compile, are reported apart from the steady-state img/s;
- precision: the runtime opened with the arm's precision (`auto` records what it chose and why).
LPIPS: the lpips package with a random-init backbone (the loss value is meaningless, the cost is the same);
without the package, a random-init stand-in of the same shape (`lpips_standin.StandinLPIPS`), marked so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import types

import torch

from lpips_standin import lpips_source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, items: int, device: torch.device, warmup: int, steps: int, max_s: float) -> dict:
    """Warm-up calls (the first one timed apart: it holds any compile), then at least one and up to
    `steps` timed calls within `max_s` seconds. Rates are items/s per call."""
    sync(device)
    t0 = time.perf_counter()
    first = None
    for i in range(warmup):
        fn()
        sync(device)
        if i == 0:
            first = time.perf_counter() - t0
    rates, end = [], time.perf_counter() + max_s
    while len(rates) < steps and (not rates or time.perf_counter() < end):
        t = time.perf_counter()
        fn()
        sync(device)
        rates.append(items / (time.perf_counter() - t))
    rates_sorted = sorted(rates)
    return {"img_s": {"median": rates_sorted[len(rates) // 2], "min": rates_sorted[0], "max": rates_sorted[-1],
                      "n": len(rates)}, "first_call_s": None if first is None else round(first, 2)}


def peak_memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_alloc_mib": None, "peak_reserved_mib": None}
    return {"peak_alloc_mib": round(torch.cuda.max_memory_allocated(device) / 2**20),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved(device) / 2**20)}


@contextlib.contextmanager
def knobs(channels_last: bool, cudnn_benchmark: bool):
    """channels_last and cudnn.benchmark for one arm, restored after it."""
    from litevae_cli import runtime

    saved = runtime.use_channels_last, torch.backends.cudnn.benchmark
    if not channels_last:
        runtime.use_channels_last = lambda *a, **k: False
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        runtime.use_channels_last, torch.backends.cudnn.benchmark = saved


def _config_knobs(preset: str, channels_last: bool, cudnn_benchmark: bool, lpips_bf16: bool) -> list[str]:
    """Overrides for the knobs the config has (another change adds them); none where it has not."""
    from litevae_cli.config import load_config

    cfg = load_config(preset)
    out = []
    section = getattr(cfg, "runtime", None)
    if section is not None and hasattr(section, "channels_last"):
        out.append(f"runtime.channels_last={str(channels_last).lower()}")
    if section is not None and hasattr(section, "cudnn_benchmark"):
        out.append(f"runtime.cudnn_benchmark={str(cudnn_benchmark).lower()}")
    if hasattr(cfg.loss, "lpips_precision"):
        out.append(f"loss.lpips_precision={'bf16' if lpips_bf16 else 'fp32'}")
    return out


def _lpips_bf16(loss_fn) -> None:
    """This loss object's LPIPS network under bf16 autocast (the mean still in fp32)."""

    def lpips_loss(self, x, x_hat):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.lpips(x, x_hat).float().mean()

    loss_fn.lpips_loss = types.MethodType(lpips_loss, loss_fn)


def compile_state(state, loss_fn, backend: str, what: str = "all") -> None:
    """torch.compile the autoencoder; with what="all" the discriminator (both its uses) and the LPIPS network too."""
    state.model_ddp = torch.compile(state.model_ddp, backend=backend)
    if what != "all":
        return
    if state.disc is not None:
        compiled = torch.compile(state.disc, backend=backend)
        state.disc, state.disc_ddp = compiled, (compiled if state.disc_ddp is state.disc else state.disc_ddp)
    if loss_fn.lpips is not None:
        loss_fn.lpips = torch.compile(loss_fn.lpips, backend=backend)


@dataclasses.dataclass(frozen=True)
class Arm:
    preset: str  # b-finetune (the B recipe, phase B) or b-pretrain (phase A)
    batch: int  # images per GPU
    precision: str = "bf16"  # the runtime's: bf16 | fp32 | auto
    channels_last: bool = True
    cudnn_benchmark: bool = False
    lpips_bf16: bool = False
    compiled: str = ""  # "" eager | "model": the autoencoder compiled | "all": and the discriminator and LPIPS

    def label(self) -> str:
        on = [k for k, v in (("CL", self.channels_last), ("cudnn.benchmark", self.cudnn_benchmark),
                             ("LPIPS bf16", self.lpips_bf16), (f"compiled({self.compiled})", self.compiled)) if v]
        return f"{self.preset} b{self.batch} {self.precision} " + ("+".join(on) or "NCHW")


def train_arm(arm: Arm, device: str, overrides: list[str], warmup: int, steps: int, max_s: float,
              compile_backend: str, wrap_state=None) -> dict:
    """Measure one arm; `wrap_state(rt, state)` may replace the step's modules (the DDP arm)."""
    from litevae_cli import runtime
    from litevae_cli.config import load_config
    from litevae_cli.training.loop import train_step
    from litevae_cli.training.losses import GeneratorLoss
    from litevae_cli.training.state import build_train_state

    extra = _config_knobs(arm.preset, arm.channels_last, arm.cudnn_benchmark, arm.lpips_bf16)
    base = [f"train.batch_size={arm.batch}", f"train.precision={arm.precision}", *overrides]
    knob_error = None
    try:
        cfg = load_config(arm.preset, base + extra)
    except Exception as e:  # the keys exist but take other values: the knobs set directly below still apply
        knob_error, extra = f"{type(e).__name__}: {e}", []
        cfg = load_config(arm.preset, base)
    with knobs(arm.channels_last, arm.cudnn_benchmark):
        rt = runtime.setup_runtime(device, arm.precision, init_distributed=False)
        lpips = lpips_source(cfg.loss.lpips_net) if cfg.loss.lpips > 0 else {"lpips": "off (weight 0)"}
        loss_fn = rt.place(GeneratorLoss(cfg.loss, cfg.discriminator.loss, lpips_random_backbone=True))
        via_config = any(e.startswith("loss.lpips_precision=") for e in extra)
        if arm.lpips_bf16 and not via_config and loss_fn.lpips is not None:
            _lpips_bf16(loss_fn)
        torch.manual_seed(cfg.train.seed)
        state = build_train_state(rt, cfg)
        first_conv = next(m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d))
        cl_effective = first_conv.weight.is_contiguous(memory_format=torch.channels_last) \
            and not first_conv.weight.is_contiguous()
        if wrap_state is not None:
            wrap_state(rt, state)
        if arm.compiled:
            compile_state(state, loss_fn, compile_backend, arm.compiled)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(arm.batch, 3, cfg.data.resolution, cfg.data.resolution, generator=g) * 2 - 1
        x = x.pin_memory() if rt.device.type == "cuda" else x
        results = []
        if rt.device.type == "cuda":
            sync(rt.device)
            torch.cuda.reset_peak_memory_stats(rt.device)
        timing = time_calls(lambda: results.append(train_step(rt, cfg, state, loss_fn, [x])), arm.batch,
                            rt.device, warmup, steps, max_s)
        nonfinite = sum(r.nonfinite for r in results)
    return {"preset": arm.preset, "phase": cfg.phase, "batch": arm.batch, "resolution": cfg.data.resolution,
            "model": f"{cfg.model.encoder} + {cfg.model.decoder}, disc {cfg.discriminator.name}",
            **rt.precision_record(), "channels_last": arm.channels_last, "channels_last_effective": cl_effective,
            "cudnn_benchmark": arm.cudnn_benchmark, "lpips_bf16": arm.lpips_bf16,
            "config_knobs": extra, "config_knobs_error": knob_error,
            "lpips_bf16_via": "config" if via_config else "patched here",
            "compiled": arm.compiled, "compile_backend": compile_backend if arm.compiled else None,
            **lpips, **timing, **peak_memory(rt.device), "steps_run": len(results), "nonfinite_steps": nonfinite}

