"""Host memory of a CPU run: freed blocks stay in the process for the next step instead of going back to the kernel.

Why. glibc's malloc serves every request above its mmap threshold (dynamic, at most 32 MiB) with a fresh
`mmap` and unmaps it on `free`, and it trims the free top of its heap. A forward allocates every activation
anew, so each call the kernel faults in and zeroes every page of every large activation. Measured on a 2-core
AMD EPYC, bf16 channels_last encoders at 256 px, batch 16: 9-16% of the CPU time went to the kernel (about
660 000 page faults per litevae-b forward with torch's THP_MEM_ALLOC_ENABLE unset, 28 000 with it at 1); with
freed memory kept, none, and the encoders ran 1.19-1.25x faster (BENCHMARKS.md "Host memory kept for reuse").

What. `keep_freed_memory` sets, as mallopt(3) documents them, M_MMAP_MAX = 0 (large requests come from the
heap, not from fresh mappings) and M_TRIM_THRESHOLD = -1 (the heap is never trimmed): the next step reuses
the pages the last one freed. The numbers do not change, only where the bytes live. The cost: the process
keeps its peak heap, and the peak itself grows where a freed block is a little too small for the next aligned
request (batch-16 encoder forward: +7% for litevae-b, +32% for SD-VAE; +39-46% with THP_MEM_ALLOC_ENABLE=1,
whose 2 MiB alignment needs more slack).

Where. `runtime.setup_runtime` applies it when the run's device is the CPU, once per process (it cannot be
undone); loader workers forked afterwards inherit it. It is never applied on import, so a library caller's
process keeps its malloc, nor on CUDA/MPS runs, whose activations are not host memory (not measured there).
LITEVAE_HOST_MEMORY=system leaves malloc as it is. On a C library other than glibc (macOS, musl), or when a
preloaded allocator (jemalloc, tcmalloc) is the process's malloc, nothing is changed and the run record says so.

Memory. Counted per forward (peak RSS during one batch-16 forward minus RSS before it), the freed blocks
fragment glibc's heap: litevae-b's fp32 forward peaks 67% higher (797 -> 1331 MiB), SD-VAE's 20%. jemalloc told
never to purge (LD_PRELOAD=libjemalloc.so.2 MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1) was as fast on the
same machine and cost +31% / +21% (BENCHMARKS.md "The whole suite as one command").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

from litevae_cli.errors import UserError

HOST_MEMORY_ENV = "LITEVAE_HOST_MEMORY"
HOST_MEMORY_CHOICES = ("reuse", "system")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>

_applied: tuple[str, str] | None = None  # what keep_freed_memory did in this process, once it did it


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has `gnu_get_libc_version` and `mallopt`), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        version = libc.gnu_get_libc_version
        libc.mallopt  # noqa: B018 - an AttributeError here means no mallopt
    except (OSError, AttributeError, TypeError):
        return None
    version.restype = ctypes.c_char_p
    return libc


def preloaded_allocator() -> str | None:
    """"jemalloc" or "tcmalloc" when that library serves this process's malloc (e.g. through LD_PRELOAD), else
    None: its entry points are then visible in the process's global symbols."""
    process = ctypes.CDLL(None)
    for name, symbol in (("jemalloc", "mallctl"), ("tcmalloc", "tc_malloc")):
        if hasattr(process, symbol):
            return name
    return None


def keep_freed_memory(device: torch.device) -> tuple[str, str]:
    """("reuse" | "system", why) for a run on `device`: on the CPU, glibc keeps freed memory for reuse
    (module docstring) unless LITEVAE_HOST_MEMORY=system; applied once per process."""
    global _applied
    asked = os.environ.get(HOST_MEMORY_ENV, "").strip().lower()
    if asked and asked not in HOST_MEMORY_CHOICES:
        raise UserError(f"{HOST_MEMORY_ENV}={asked!r}: expected one of {', '.join(HOST_MEMORY_CHOICES)}")
    if _applied is not None:
        if asked == "system":
            return "reuse", f"set earlier in this process; {HOST_MEMORY_ENV}=system applies to a new process"
        return _applied
    if device.type != "cpu":
        return "system", f"{device.type} run: activations are not host memory"
    if asked == "system":
        return "system", f"{HOST_MEMORY_ENV}=system"
    if (allocator := preloaded_allocator()) is not None:
        return "system", f"{allocator} is this process's malloc: left as it is (mallopt would not reach it)"
    libc = glibc()
    if libc is None:
        return "system", "not glibc: its malloc is left as it is"
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, -1) != 1:
        return "system", "glibc refused mallopt(M_MMAP_MAX / M_TRIM_THRESHOLD)"
    _applied = ("reuse", f"CPU run: glibc {libc.gnu_get_libc_version().decode()} keeps freed memory "
                         "(mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1)")
    return _applied
