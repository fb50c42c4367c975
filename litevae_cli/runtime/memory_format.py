"""Memory format and cudnn.benchmark of a run: which modules run channels_last (`use_channels_last`,
per part of an autoencoder: `channels_last_parts`), `configure` (config keys `runtime.channels_last`,
`runtime.cudnn_benchmark`), their run record (`memory_record`), and whether DDP must broadcast a module's
buffers (`needs_buffer_broadcast`).

Part of the runtime package (`litevae_cli.runtime` re-exports every name here). The decision is called
through the package (`runtime.use_channels_last`), so a caller that replaces it there (gpu_bench's
channels_last arm) changes `rt.place`, `rt.batch` and the run record alike.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

import litevae_cli.runtime as runtime  # the package: `use_channels_last` looked up there (module docstring)
from litevae_cli.errors import UserError

if TYPE_CHECKING:
    from litevae_cli.runtime import Runtime

CHANNELS_LAST_MODES = ("auto", "on", "off")  # runtime.channels_last
CUDNN_BENCHMARK_MODES = ("auto", "on", "off")  # runtime.cudnn_benchmark
GROUPNORM_HEAVY = 0.25  # GroupNorms per convolution from which a module counts as GroupNorm-heavy


def groupnorm_heavy(module: torch.nn.Module) -> bool:
    """At least one GroupNorm per 4 convolutions (a 4-D `weight`, SMConv2d too): litevae-* encoders
    (112 per 152 convs), SD-VAE encoders/decoders; not the SMC decoder or the discriminators."""
    norms = sum(isinstance(m, torch.nn.GroupNorm) for m in module.modules())
    convs = sum(getattr(getattr(m, "weight", None), "ndim", 0) == 4 for m in module.modules())
    return norms > 0 and norms >= GROUPNORM_HEAVY * max(convs, 1)


def use_channels_last(rt: Runtime, module: torch.nn.Module | None = None) -> bool:
    """Whether `module` (None: an input image batch) runs channels_last. `rt.channels_last` on/off decide
    alone; auto: on CUDA every module that is not GroupNorm-heavy (this torch's CUDA GroupNorm has no
    channels_last kernel: a channels_last GroupNorm-heavy encoder pays a layout copy around each of its
    GroupNorms), and contiguous inputs (the encoder reads them); on CPU everything with bf16 (oneDNN's
    channels_last convs and GroupNorm), nothing in fp32; elsewhere nothing."""
    if rt.channels_last != "auto":
        return rt.channels_last == "on"
    if rt.device.type == "cuda":
        return module is not None and not groupnorm_heavy(module)
    return rt.device.type == "cpu" and rt.precision == "bf16"


def channels_last_parts(rt: Runtime, module: torch.nn.Module) -> list[torch.nn.Module]:
    """The parts of `module` that `place` makes channels_last: an autoencoder (a module with an `encoder`
    and a `decoder`) decided per direct child, any other module as a whole."""
    if hasattr(module, "encoder") and hasattr(module, "decoder"):
        return [child for child in module.children() if runtime.use_channels_last(rt, child)]
    return [module] if runtime.use_channels_last(rt, module) else []


def needs_buffer_broadcast(module: torch.nn.Module) -> bool:
    """DDP's broadcast_buffers is needed only for buffers that depend on each rank's batch (BatchNorm)."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def configure(rt: Runtime, channels_last: str = "auto", cudnn_benchmark: str = "auto") -> Runtime:
    """The runtime of a training run with its memory-format mode and cudnn.benchmark (config keys
    `runtime.channels_last`, `runtime.cudnn_benchmark`: auto | on | off). cudnn.benchmark auto: on for
    CUDA training, whose shapes are fixed (one crop size and micro-batch), so each conv's fastest
    algorithm is searched once; off elsewhere (it only affects cuDNN). Sets the process-wide flag."""
    if channels_last not in CHANNELS_LAST_MODES or cudnn_benchmark not in CUDNN_BENCHMARK_MODES:
        raise UserError(f"runtime.channels_last / runtime.cudnn_benchmark must be one of auto, on, off, "
                        f"got {channels_last!r} / {cudnn_benchmark!r}")
    bench = cudnn_benchmark == "on" or (cudnn_benchmark == "auto" and rt.device.type == "cuda")
    torch.backends.cudnn.benchmark = bench
    return dataclasses.replace(rt, channels_last=channels_last, cudnn_benchmark=bench)


def memory_record(rt: Runtime, modules: dict[str, torch.nn.Module | None]) -> dict:
    """For a run record: the memory-format mode, which of `modules` (name -> module) run channels_last,
    and whether cudnn.benchmark is on."""
    parts = {name: runtime.use_channels_last(rt, m) for name, m in modules.items() if m is not None}
    return {"channels_last": rt.channels_last, "channels_last_modules": parts, "cudnn_benchmark": rt.cudnn_benchmark}
