"""Shared benchmark machinery: thread set-up, interleaved timing, statistics, peers, child-process I/O.

Every section script (`encoder_bench.py`, `dwt_bench.py`, ...) is run by `run.py` as its own process,
so `THP_MEM_ALLOC_ENABLE` (read by torch at import) and the thread count are fixed per process. A
section writes one JSON document (`--json PATH`) that `report.py` renders.

Timing protocol (issue 7): the contenders of one comparison are timed in the same process on the
same input, interleaved A, B, A, B, ... per repeat, after warm-up. Each contender's figure is
min/median/max over the repeats, and every ratio is computed pair by pair (repeat i of A against
repeat i of B) before its min/median/max is taken, so a burst of load from other processes on this
shared machine hits both sides of a pair alike. The order rotates from one repeat to the next (A, B then
B, A for a pair), so no contender always inherits the same neighbour's allocator and cache state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

_LOAD_AT_IMPORT = os.getloadavg()  # a section imports this module first: its load average at start


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--reps", type=int, default=5, help="timed repeats per contender (>= 5 for reported figures)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls per contender")
    p.add_argument("--quick", action="store_true", help="the smaller grid of run.py --quick")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p


_HOST_MEMORY: tuple[str, str] = ("system", "setup_threads not called")


def setup_threads(threads: int) -> None:
    """torch's thread counts, and host memory as a CPU run of the CLI has it (`runtime.host_memory`: freed memory
    kept for reuse unless LITEVAE_HOST_MEMORY=system); `machine_info` records which."""
    global _HOST_MEMORY
    from litevae_cli.runtime.host_memory import keep_freed_memory

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    _HOST_MEMORY = keep_freed_memory(torch.device("cpu"))


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values),
            "values": values}


def time_interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1,
                     items: dict[str, float] | float = 1.0, sync: Callable[[], None] | None = None,
                     clock: Callable[[], float] = time.perf_counter, rotate: bool = True) -> dict:
    """Time each callable `reps` times, interleaved per repeat; returns {name: [items/s per repeat]}.

    `items` is what one call processes (images, or FLOPs for a rate in FLOP/s), per name or shared.
    Warm-up calls are interleaved too, so one-off costs (allocator growth, weight reorders) land there.
    `clock` is wall time by default; `time.thread_time` with one thread measures CPU work, which
    another process's load cannot stretch (used to decide optimisations, never for reported figures).
    """
    sync = sync or (lambda: None)
    per = items if isinstance(items, dict) else {k: items for k in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    out: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        # Rotate the order each repeat (A B C, B C A, ...; A B, B A for a pair) so no contender always runs
        # right after the same neighbour (whose freed memory or cache state it would inherit).
        for name in (names[r % len(names):] + names[:r % len(names)]) if rotate else names:
            fn = fns[name]
            sync()
            t0 = clock()
            fn()
            sync()
            out[name].append(per[name] / (clock() - t0))
    return out


def pair_ratio(a: list[float], b: list[float]) -> dict:
    """min/median/max of a[i] / b[i] (rates measured in the same repeat)."""
    return stats([x / y for x, y in zip(a, b)])


# ---------------------------------------------------------------------------------------------
# The peer: diffusers' AutoencoderKL with the Stable Diffusion 1.x configuration, random init
# ---------------------------------------------------------------------------------------------

SD1_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  layers_per_block=2, norm_num_groups=32, act_fn="silu")


def diffusers_sd_vae(seed: int = 0):
    """The SD 1.x AutoencoderKL (34.16 M encoder + quant conv, 49.49 M decoder), random init, eval mode."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**SD1_CONFIG).eval()


def peer_available() -> str | None:
    """None when diffusers imports, else the reason (the bench extra is not installed)."""
    try:
        import diffusers  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the environment
        return f"diffusers not importable ({type(e).__name__}: {e}); install the bench extra: pip install -e '.[bench]'"
    return None


# ---------------------------------------------------------------------------------------------
# Precision and layout
# ---------------------------------------------------------------------------------------------

def autocast(precision: str):
    """bf16 autocast on the CPU (weights stay float32, as in training); fp32 is a no-op region."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "CL" else torch.contiguous_format


def images(batch: int, resolution: int, layout: str = "NCHW", seed: int = 0) -> torch.Tensor:
    """A batch of images in [-1, 1] (uniform noise: the cost of these networks does not depend on content)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1
    return x.contiguous(memory_format=memory_format(layout))


# ---------------------------------------------------------------------------------------------
# Machine description and output
# ---------------------------------------------------------------------------------------------

def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):  # the matrix/bf16 units that decide CPU speed ratios (amx, avx512_bf16)
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in have]
                break
    except OSError:
        pass
    try:
        thp_sys = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        thp_sys = "unknown"
    return {"cpu": cpu, "cpu_flags": flags, "logical_cpus": os.cpu_count(), "threads": threads,
            "torch": torch.__version__,
            "python": platform.python_version(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
            "kernel_thp": thp_sys, "host_memory": _HOST_MEMORY[0], "host_memory_reason": _HOST_MEMORY[1],
            "loadavg_start": _LOAD_AT_IMPORT}


def write_json(path: Path | None, doc: dict) -> None:
    doc = dict(doc)
    doc.setdefault("machine", machine_info(torch.get_num_threads()))
    doc["machine"]["loadavg_end"] = os.getloadavg()
    text = json.dumps(doc, indent=1, default=str)
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
