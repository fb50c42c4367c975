"""The one runtime: device choice, precision/autocast, seeding, torchrun DDP and rank-0 printing.

Only this module touches device placement policy, autocast and process groups; commands ask it.
- Device: cuda, then mps, then cpu; `--device` overrides.
- Precision: fp32, bf16 (autocast), fp16 (autocast + GradScaler in training). The DWT and the losses
  run in fp32 regardless (they disable autocast locally).
- Distributed: torchrun's env:// (RANK/WORLD_SIZE/LOCAL_RANK); nccl on GPU, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from litevae_cli.errors import UserError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def autocast(self):
        """Mixed-precision region for model compute (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def print(self, *args, **kwargs) -> None:
        """Print on rank 0 only."""
        if self.is_main:
            print(*args, **kwargs, flush=True)


def select_device(name: str | None = None, local_rank: int = 0) -> torch.device:
    """cuda, then mps, then cpu; an explicit name must be available."""
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device must be cpu, cuda[:N] or mps, got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available on this machine")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for but MPS is not available on this machine")
    if kind == "cuda" and ":" not in name:
        return torch.device("cuda", local_rank)
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise UserError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    return precision


def setup_runtime(device: str | None = None, precision: str = "fp32", init_distributed: bool = True) -> Runtime:
    """Resolve the device and precision; join the torchrun process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and init_distributed and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return Runtime(dev, check_precision(precision, dev), rank, world_size, local_rank)


def teardown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(rt: Runtime, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (in place on a copy); identity in a single process."""
    if not (rt.distributed and dist.is_initialized()):
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def gather_objects(rt: Runtime, obj) -> list:
    """Every rank's picklable `obj`, in rank order (collective); [obj] in a single process."""
    if not (rt.distributed and dist.is_initialized()):
        return [obj]
    out: list = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_channels_last(rt: Runtime) -> bool:
    """channels_last helps convs on CUDA (tensor cores) and with bf16 on CPU; not in fp32 on CPU."""
    return rt.device.type == "cuda" or (rt.device.type == "cpu" and rt.precision == "bf16")
