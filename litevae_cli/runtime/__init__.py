"""The one runtime: device choice, placement, precision/autocast, seeding, torchrun DDP and rank-0 printing.

Only this package touches device placement, autocast, process groups and DDP wrapping; everything else
asks it. Every command opens it once: `with runtime.open(device, precision) as rt: <one library call>`,
which also tears it down (leaves the process group) however the block ends. This module holds the
`Runtime`, its set-up and teardown, device and precision choice; `process_group.py` joining and leaving the
process group and the collectives; `memory_format.py` channels_last and cudnn.benchmark; `host_memory.py`
freed host memory kept for reuse on CPU runs (glibc mallopt, the run record's `host_memory`). All are
re-exported here: `from litevae_cli.runtime import X` names every part.
- Device: cuda, then mps, then cpu; `--device` overrides. `rt.place(module)` / `rt.batch(x)` move
  things there (channels_last where `use_channels_last` says it helps, when asked, per module: on CUDA a
  GroupNorm-heavy module such as the LiteVAE encoder stays contiguous). `configure` sets the memory-format
  mode and cudnn.benchmark of a training run (`runtime.channels_last`, `runtime.cudnn_benchmark`).
- Precision: fp32, bf16 (autocast), fp16 (autocast + GradScaler in training), or auto (`resolve_precision`):
  bf16 on CUDA with bf16 support and on CPUs with native bf16 (AMX or AVX512-BF16), fp32 elsewhere; the
  runtime keeps what was chosen and why (`precision_reason`) for the run record. The DWT and the losses
  run in fp32 regardless (`float32_region`).
- Distributed: torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK; its store at MASTER_ADDR:MASTER_PORT, keys
  under a prefix per restart attempt: `launcher_store`); nccl on GPU (with `device_id`), gloo on CPU,
  each with a timeout (`runtime.dist_timeout_s`, env LITEVAE_DIST_TIMEOUT_S, default 600 s). A rank's GPU is
  its LOCAL_RANK among the visible devices, or the only one it sees (`cuda_index`); `--device cuda:N` with
  several ranks on a node is refused. `runtime.force_distributed` (env LITEVAE_FORCE_DISTRIBUTED=1) joins a
  1-rank process group without torchrun, so one GPU runs the DDP/NCCL code paths. Collectives
  (`all_reduce_sum`, `any_rank`, `gather_objects`, `barrier`) are identities without a process group.
  Leaving: `destroy_process_group` after a normal end; on an error path the group is aborted
  (`abort_process_group`), since destroy waits for pending work and a dead peer would hold it until the timeout.
- Process-level settings (`PROCESS_ENV`), part of every runtime a command opens: OpenMP reads them once,
  when torch loads, so they are applied as this package loads, before it imports torch or a submodule
  (and again, for anything started later, by `open`); a value already in the environment wins. OMP_WAIT_POLICY=PASSIVE:
  idle OpenMP threads sleep instead of spinning; on shared or busy CPUs spinning threads steal the cores
  the step needs (demo step on a loaded 2-core machine: 2.5-7 s with the default policy, 1.0 s with PASSIVE).
  A Python caller that imported torch before litevae_cli keeps the policy torch started with.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PROCESS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_process_settings() -> None:
    for key, value in PROCESS_ENV.items():
        os.environ.setdefault(key, value)


apply_process_settings()  # before torch loads (module docstring)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from litevae_cli.errors import UserError  # noqa: E402
# Re-exported: `from litevae_cli.runtime import X` names every part of the runtime.
from litevae_cli.runtime.host_memory import HOST_MEMORY_ENV, keep_freed_memory  # noqa: E402,F401
from litevae_cli.runtime.memory_format import (CHANNELS_LAST_MODES, CUDNN_BENCHMARK_MODES, GROUPNORM_HEAVY,  # noqa: E402,F401
                                               channels_last_parts, configure, groupnorm_heavy, memory_record,
                                               needs_buffer_broadcast, use_channels_last)
from litevae_cli.runtime.process_group import (DEFAULT_DIST_TIMEOUT_S, FORCE_ENV, TIMEOUT_ENV,  # noqa: E402,F401
                                               abort_process_group, all_reduce_sum, any_rank, barrier, dist_timeout,
                                               gather_objects, init_process_group, launcher_store, process_rank,
                                               rank_flags)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)  # what --precision and train.precision accept
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 matrix / dot-product units


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16: what runs (auto already resolved)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    precision_reason: str = "asked for"  # why this precision: `resolve_precision`'s reason for auto
    backend: str | None = None  # the process group's backend (nccl | gloo); None = no process group
    dist_timeout_s: float | None = None  # the process group's collective timeout
    channels_last: str = "auto"  # auto | on | off: memory format of placed modules (`use_channels_last`)
    cudnn_benchmark: bool = False  # torch.backends.cudnn.benchmark as `configure` set it
    host_memory: str = "system"  # reuse | system: what `host_memory.keep_freed_memory` did for this run
    host_memory_reason: str = ""

    def precision_record(self) -> dict:
        """The precision for a run record: what runs and why."""
        return {"precision": self.precision, "precision_reason": self.precision_reason}

    def host_memory_record(self) -> dict:
        """Host memory for a run record: freed memory kept for reuse or the system's malloc, and why."""
        return {"host_memory": self.host_memory, "host_memory_reason": self.host_memory_reason}

    def dist_record(self) -> dict:
        """The process group for a run record: world size, backend and timeout (None without one)."""
        return {"world_size": self.world_size, "backend": self.backend, "dist_timeout_s": self.dist_timeout_s}

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group: under torchrun, or with one rank when `runtime.force_distributed` asks."""
        return self.world_size > 1 or self.backend is not None

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

    def place(self, module: torch.nn.Module, channels_last: bool = False) -> torch.nn.Module:
        """`module` on this device; when asked, channels_last wherever `use_channels_last` says it helps
        (`channels_last_parts`: an autoencoder per part, so on CUDA a LiteVAE encoder stays contiguous while
        an SMC decoder goes channels_last)."""
        module = module.to(self.device)
        if channels_last:
            for part in channels_last_parts(self, module):
                part.to(memory_format=torch.channels_last)
        return module

    def batch(self, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """A host batch on this device (asynchronous from pinned memory), channels_last as in `place` for
        the module that reads it first (`use_channels_last(rt)`: an image batch, read by an encoder)."""
        fmt = torch.channels_last if channels_last and use_channels_last(self) else torch.contiguous_format
        return x.to(self.device, non_blocking=True, memory_format=fmt)

    def to_host(self, t: torch.Tensor):
        """(host copy, event or None): on CUDA an asynchronous copy into pinned memory and the event to
        wait on before reading it; elsewhere a plain copy."""
        if self.device.type != "cuda":
            return t.cpu(), None
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host, event

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling only for fp16; bf16 has fp32's exponent range and needs none."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The DDP wrapper of `module` under torchrun; `module` itself in a single process."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Every parameter of the autoencoder and of the discriminators takes part in each loss, so
        # find_unused_parameters (an extra graph traversal per step) is not needed.
        # broadcast_buffers (rank 0's buffers sent to every rank before EACH forward) only where a buffer can
        # differ between ranks: BatchNorm running statistics, computed from each rank's own batch. The other
        # buffers are the spectral-norm vectors u, v (the U-Net and GigaGAN discriminators): one power
        # iteration per training forward, a deterministic function of (weight, u, v) only, never of the
        # batch. DDP starts every rank from rank 0's weights and buffers and keeps the weights identical
        # (averaged gradients, same optimizer), so every rank computes the same u, v: broadcasting them
        # (76 tensors per call of the U-Net discriminator) sends what each rank already has. Should two
        # GPUs round differently, u, v only differ within the power iteration's tolerance, and the iteration
        # pulls them back to the same leading singular vectors. The autoencoders hold no buffers.
        # Newer torch (2.14 here) names it forward_sync_buffers (buffers still synced once at construction);
        # older broadcast_buffers=False also skips that first sync, and u, v start equal from the shared seed.
        sync = needs_buffer_broadcast(module)
        new_name = "forward_sync_buffers" in inspect.signature(DDP).parameters
        return DDP(module, device_ids=ids, find_unused_parameters=False,
                   **{"forward_sync_buffers" if new_name else "broadcast_buffers": sync})

    def no_sync(self, wrapped: torch.nn.Module, last: bool):
        """Gradient accumulation under DDP: all-reduce only on the last micro-batch."""
        return contextlib.nullcontext() if (last or not self.distributed) else wrapped.no_sync()


def cuda_index(local_rank: int) -> int:
    """This rank's CUDA device among the visible ones: 0 when it sees one (CUDA_VISIBLE_DEVICES set per rank,
    e.g. SLURM's --gpus-per-task or torchrun --virtual-local-rank), else LOCAL_RANK."""
    visible = torch.cuda.device_count()
    if visible == 1:
        return 0
    if local_rank < visible:
        return local_rank
    raise UserError(f"LOCAL_RANK={local_rank} but this process sees {visible} CUDA devices (CUDA_VISIBLE_DEVICES="
                    f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): start at most {visible} ranks per node")


def select_device(name: str | None = None, local_rank: int = 0, local_world_size: int = 1) -> torch.device:
    """cuda (this rank's GPU, `cuda_index`), then mps, then cpu; an explicit name must be available.
    `local_world_size`: ranks on this node; `cuda:N` with more than one would put them all on GPU N."""
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda", cuda_index(local_rank))
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
    if kind != "cuda":
        return torch.device(name)
    if ":" not in name:
        return torch.device("cuda", cuda_index(local_rank))
    index = name.split(":", 1)[1]
    if not index.isdigit():
        raise UserError(f"--device must be cpu, cuda[:N] or mps, got {name!r}")
    if local_world_size > 1:
        raise UserError(f"--device {name} under torchrun would put all {local_world_size} ranks of this node on GPU "
                        f"{index}: use --device cuda (each rank takes the GPU of its LOCAL_RANK) and "
                        "CUDA_VISIBLE_DEVICES to choose the GPUs")
    if int(index) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this process sees {torch.cuda.device_count()} CUDA device(s) "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return torch.device(name)


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (Linux x86); empty where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()  # not open(): this module's `open` is the runtime's
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """(precision to run, reason). `auto`: bf16 autocast on CUDA where the GPU supports bf16 and on CPUs
    with native bf16 (an `amx_bf16` or `avx512_bf16` flag in /proc/cpuinfo, or torch's CPU capability
    naming AMX or BF16), fp32 elsewhere (MPS, older GPUs, CPUs where bf16 is emulated and slower)."""
    if precision != "auto":
        return precision, "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: CUDA GPU with bf16 ({torch.cuda.get_device_name(device)})"
        return "fp32", f"auto: CUDA GPU without bf16 support ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        have = sorted(cpu_flags() & set(CPU_BF16_FLAGS))
        capability = torch.backends.cpu.get_cpu_capability()
        if have:
            return "bf16", f"auto: CPU with native bf16 ({', '.join(have)})"
        if "AMX" in capability or "BF16" in capability:
            return "bf16", f"auto: CPU with native bf16 (torch CPU capability {capability})"
        return "fp32", (f"auto: CPU without native bf16 (no {' or '.join(CPU_BF16_FLAGS)} flag, "
                        f"torch CPU capability {capability}): bf16 would be emulated")
    return "fp32", f"auto: fp32 on {device.type}"


def check_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISION_CHOICES:
        raise UserError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise UserError("--precision fp16 needs a GPU; use bf16, fp32 or auto on CPU")
    return precision


def setup_runtime(device: str | None = None, precision: str = "fp32", init_distributed: bool = True,
                  force_distributed: bool | None = None, dist_timeout_s: float | None = None) -> Runtime:
    """Resolve the device and precision; join the torchrun process group when launched by torchrun, or a
    1-rank one when `force_distributed` (None: env LITEVAE_FORCE_DISTRIBUTED)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    dev = select_device(device, local_rank, local_world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    force = force_distributed if force_distributed is not None else \
        os.environ.get(FORCE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    backend = timeout = None
    if init_distributed and (world_size > 1 or force):
        timeout = dist_timeout(dist_timeout_s)
        if not dist.is_initialized():
            init_process_group("nccl" if dev.type == "cuda" else "gloo", rank, world_size, dev, timeout)
        backend = str(dist.get_backend())
        rank, world_size = dist.get_rank(), dist.get_world_size()
    chosen, reason = resolve_precision(check_precision(precision, dev), dev)
    host_memory, host_reason = keep_freed_memory(dev)
    return Runtime(dev, chosen, rank, world_size, local_rank, precision_reason=reason, backend=backend,
                   dist_timeout_s=timeout, host_memory=host_memory, host_memory_reason=host_reason)


def teardown_runtime(rt: Runtime, failed: bool = False) -> None:
    """Leave the process group: destroy after a normal end, abort on an error path (`failed`)."""
    if rt.distributed and dist.is_initialized():
        abort_process_group() if failed else dist.destroy_process_group()


@contextlib.contextmanager
def open(device: str | None = None, precision: str = "fp32", distributed: bool = True,  # noqa: A001
         force_distributed: bool | None = None, dist_timeout_s: float | None = None) -> Iterator[Runtime]:
    """The runtime of one command (`setup_runtime`), torn down when the block ends, however it ends (an
    exception aborts the process group instead of waiting on peers). `distributed=False`: never join a
    process group (commands that each rank runs on its own)."""
    apply_process_settings()
    rt = setup_runtime(device, precision, init_distributed=distributed, force_distributed=force_distributed,
                       dist_timeout_s=dist_timeout_s)
    failed = True
    try:
        yield rt
        failed = False
    finally:
        teardown_runtime(rt, failed)


def float32_region(device: torch.device):
    """Autocast off, so a block runs in float32 even inside a mixed-precision region (DWT, losses)."""
    if device.type == "meta":  # FLOP counting on the meta device: autocast does not apply there
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def bfloat16_region(device: torch.device):
    """bf16 autocast, whatever the caller's precision (LPIPS's backbone with loss.lpips_precision bf16)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
