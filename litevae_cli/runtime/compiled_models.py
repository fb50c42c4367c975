"""What `runtime.compile` / `--compile` does to a run's models on its device; the record of what it did.

`compile_models(device, *modules)` first routes each affine GroupNorm to ATen's kernels where inductor's own
GroupNorm is the slower one (`aten_group_norm`: on CPU, measured 2.6x slower than ATen's; BENCHMARKS.md
"GroupNorm under compile"), then compiles every module in place (`models.compiling.compile_in_place`: no
wrapper, checkpoints keep their keys). On CUDA the GroupNorms stay inductor's (its Triton kernels fuse them
with their SiLU; not yet measured against ATen's, so nothing is changed there). LITEVAE_COMPILE_GROUP_NORM=inductor
keeps inductor's GroupNorm on CPU too (how the benchmarks compare the two); =aten is refused off the CPU, where
the op's fakes (output layout, statistics dtype) have not been checked against ATen's CUDA kernels.
"""

from __future__ import annotations

import os

import torch

from litevae_cli.errors import UserError
from litevae_cli.models.compiling import compile_backend, compile_in_place
from litevae_cli.runtime.aten_group_norm import route_group_norm

GROUP_NORM_ENV = "LITEVAE_COMPILE_GROUP_NORM"
GROUP_NORM_CHOICES = ("aten", "inductor")


def group_norm_choice(device: torch.device) -> tuple[str, str]:
    """("aten" | "inductor", why) for the GroupNorms of models compiled on `device`."""
    forced = os.environ.get(GROUP_NORM_ENV)
    if forced:
        if forced not in GROUP_NORM_CHOICES:
            raise UserError(f"{GROUP_NORM_ENV}={forced!r}: expected one of {', '.join(GROUP_NORM_CHOICES)}")
        if forced == "aten" and device.type != "cpu":
            raise UserError(f"{GROUP_NORM_ENV}=aten is for CPU runs only (not checked on {device.type}); "
                            "unset it or use =inductor")
        return forced, f"{GROUP_NORM_ENV}={forced}"
    if device.type == "cpu":
        return "aten", "CPU: ATen's GroupNorm kernel is faster than inductor's"
    return "inductor", f"{device.type}: inductor fuses GroupNorm with its neighbours"


def route_for(device: torch.device, *modules: torch.nn.Module | None) -> dict:
    """Route the GroupNorms of `modules` as a compile on `device` does; returns {"kernels", "why", "routed"}."""
    kernels, why = group_norm_choice(device)
    return {"kernels": kernels, "why": why, "routed": route_group_norm(*modules) if kernels == "aten" else 0}


def compile_models(device: torch.device, *modules: torch.nn.Module | None, backend: str | None = None) -> dict:
    """Compile `modules` (None entries skipped) in place for `device`; returns the run record's "compile" entry:
    {"backend", "modules": class names, "group_norm": {"kernels", "why", "routed": how many}}."""
    chosen = compile_backend(backend)
    group_norm = route_for(device, *modules)
    return {"backend": chosen, "modules": compile_in_place(*modules, backend=chosen), "group_norm": group_norm}
