"""The process group of a run: joining it under torchrun (or as one rank), leaving it, and the collectives.

Part of the runtime package (`litevae_cli.runtime`, which re-exports every name here and applies the
process-level settings before torch loads). torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK; its store at
MASTER_ADDR:MASTER_PORT, keys under a prefix per restart attempt: `launcher_store`); nccl on GPU (with
`device_id`), gloo on CPU, each with a timeout (`dist_timeout`: runtime.dist_timeout_s, env
LITEVAE_DIST_TIMEOUT_S, default 600 s). Collectives (`all_reduce_sum`, `rank_flags`, `any_rank`,
`gather_objects`, `barrier`) are identities without a process group. On an error path the group is aborted
(`abort_process_group`), since destroy waits for pending work and a dead peer would hold it until the timeout.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from litevae_cli.errors import UserError, one_line

if TYPE_CHECKING:
    from litevae_cli.runtime import Runtime

DEFAULT_DIST_TIMEOUT_S = 600.0  # a collective waits this long for the slowest rank (first-step compile, checkpoint)
TIMEOUT_ENV, FORCE_ENV = "LITEVAE_DIST_TIMEOUT_S", "LITEVAE_FORCE_DISTRIBUTED"  # for commands without a config


def dist_timeout(value: float | None = None) -> float:
    """The collective timeout in seconds: `value` (runtime.dist_timeout_s), else LITEVAE_DIST_TIMEOUT_S, else 600."""
    if value is not None:
        return float(value)
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_DIST_TIMEOUT_S
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: must be a number of seconds") from None
    if not seconds > 0:
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: must be > 0 seconds")
    return seconds


def launcher_store(rank: int, world_size: int, timeout_s: float) -> "dist.Store":
    """The launcher's store at MASTER_ADDR:MASTER_PORT (torchrun's agent hosts it; without the agent, rank 0),
    under a prefix per torchrun restart attempt: the agent keeps one store across restarts, and the keys an
    earlier attempt left there (gloo's peer addresses, NCCL's unique id) sent the next attempt's ranks to dead
    peers, a hang at init (seen with `--max-restarts`, gloo, this torch)."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ.get("MASTER_PORT", "29500")), world_size,
                          is_master=not agent and rank == 0, timeout=timedelta(seconds=timeout_s))
    return dist.PrefixStore(f"litevae/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def init_process_group(backend: str, rank: int, world_size: int, device: torch.device, timeout_s: float) -> None:
    """Join the process group: the launcher's store (`launcher_store`) under torchrun (MASTER_ADDR set), an
    in-process store for a 1-rank group; `device_id` binds NCCL to this rank's GPU (eager communicator init)."""
    kwargs: dict = {"backend": backend, "rank": rank, "world_size": world_size, "timeout": timedelta(seconds=timeout_s)}
    if device.type == "cuda":
        kwargs["device_id"] = device
    if "MASTER_ADDR" in os.environ:
        try:
            kwargs["store"] = launcher_store(rank, world_size, timeout_s)
        except (RuntimeError, ValueError) as err:
            where = f"{os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT')}"
            raise UserError(f"rank {rank} of {world_size}: cannot reach the launcher's store at {where}: "
                            f"{one_line(err, 200)}") from None
    elif world_size == 1:
        kwargs["store"] = dist.HashStore()
    else:
        raise UserError(f"WORLD_SIZE={world_size} but MASTER_ADDR is not set: launch several ranks with torchrun")
    try:
        dist.init_process_group(**kwargs)
    except (RuntimeError, ValueError) as err:  # DistError (rendezvous, network) is a RuntimeError
        raise UserError(f"rank {rank} of {world_size}: cannot join the {backend} process group: "
                        f"{one_line(err, 200)}") from None



def abort_process_group() -> None:
    """Leave the process group without waiting for peers (an error path: one may be gone). NCCL: abort its
    communicators (`destroy_process_group` would wait for pending work until the timeout); gloo has no abort
    and its destroy does not wait on peers."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    try:
        if dist.get_backend() == "nccl" and abort is not None:
            abort()
        else:
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - already on an error path; the error that brought us here is what matters
        pass



def process_rank() -> tuple[int, int]:
    """(rank, world size) of the joined process group, (0, 1) when there is none (e.g. a user's own loop)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1



def barrier(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(rt: Runtime, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks, reduced on this device (NCCL reduces device tensors only) and returned
    on `tensor`'s device; identity in a single process. No host read of a device tensor."""
    if not (rt.distributed and dist.is_initialized()):
        return tensor
    out = tensor.to(rt.device, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(tensor.device)


def rank_flags(rt: Runtime, *flags) -> torch.Tensor:
    """Flags (Python bools or 0-dim tensors on this device) as one float tensor on this device, each entry
    the number of ranks that set it: one all_reduce for all of them and no host read (collective).
    Python values become device tensors by a fill, not a host-to-device copy."""
    device = rt.device if rt.distributed or any(isinstance(f, torch.Tensor) for f in flags) else torch.device("cpu")
    return all_reduce_sum(rt, torch.stack([f.to(device, torch.float32) if isinstance(f, torch.Tensor)
                                           else torch.full((), float(bool(f)), device=device) for f in flags]))


def any_rank(rt: Runtime, *flags) -> list[bool]:
    """For each flag (a Python bool or a 0-dim tensor), whether it is set on any rank (collective): one
    all_reduce of all flags together and one host read, none in a single process with Python bools."""
    if not rt.distributed and not any(isinstance(f, torch.Tensor) for f in flags):
        return [bool(f) for f in flags]
    return [v > 0 for v in rank_flags(rt, *flags).tolist()]


def gather_objects(rt: Runtime, obj) -> list:
    """Every rank's picklable `obj`, in rank order (collective); [obj] in a single process."""
    if not (rt.distributed and dist.is_initialized()):
        return [obj]
    out: list = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out
