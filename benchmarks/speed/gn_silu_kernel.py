"""The fused GroupNorm+SiLU kernel experiment (gn_silu_kernel.c): build it, call it, swap it into a model copy.

Issue 22 allows a hand-written kernel only with a measured reason; fusion_bound.py measured the most one could
give (BENCHMARKS.md "The whole suite as one command"). This module turns that bound into a measurement of a real
kernel: `fused_copy(model)` returns a copy of the model whose GroupNorms return silu(GroupNorm(x)) in one kernel
call, to run with `fusion_bound.silu_as_identity()` active (every SiLU in litevae's encoders follows a GroupNorm).
Unlike the probes, that copy is a model: its output is checked against the stock model's (fusion_bound.py).

The kernel is AVX-512 BF16 only and built with the system's C compiler (`CC`, else `cc`) into a temporary
directory at first use; `unavailable()` says why it cannot run here (no compiler, no avx512_bf16). Inputs it
does not cover (not bf16 channels_last, channels not a multiple of 16) go to ATen's GroupNorm and SiLU, and
`calls` counts both paths so a run shows which one it measured. Not a toolkit path: a benchmark experiment.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("gn_silu_kernel.c")
FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC"]  # -fopenmp: binds to the libgomp torch has already loaded
calls = {"fused": 0, "aten": 0}
_ATEN_SILU = F.silu  # looked up now: the model copy runs while fusion_bound patches F.silu to the identity


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def unavailable() -> str | None:
    """Why the kernel cannot run on this machine, or None when it can."""
    if "avx512_bf16" not in _cpu_flags():
        return "this CPU has no avx512_bf16 (the kernel is AVX-512 BF16 only)"
    if not shutil.which(os.environ.get("CC", "cc")):
        return f"no C compiler ({os.environ.get('CC', 'cc')}) to build {SOURCE.name}"
    return None


@functools.cache
def library() -> ctypes.CDLL:
    """The built kernel (once per process); raises RuntimeError naming the compiler's error."""
    out = Path(tempfile.mkdtemp(prefix="litevae-gn-silu-")) / "gn_silu_kernel.so"
    cmd = [os.environ.get("CC", "cc"), *FLAGS, str(SOURCE), "-o", str(out), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building {SOURCE.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    lib = ctypes.CDLL(str(out))
    lib.gn_silu_bf16.restype = ctypes.c_int
    lib.gn_silu_bf16.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 4 + [ctypes.c_float]
    return lib


def gn_silu(x: torch.Tensor, norm: torch.nn.GroupNorm) -> torch.Tensor:
    """silu(norm(x)): the kernel where it covers x (bf16, 4-D channels_last, C % 16 == 0), ATen elsewhere."""
    n, c = x.shape[:2]
    covered = (x.dtype == torch.bfloat16 and x.ndim == 4 and c % 16 == 0 and norm.affine
               and x.is_contiguous(memory_format=torch.channels_last) and norm.weight.dtype == torch.float32)
    if covered:
        y = torch.empty_like(x, memory_format=torch.channels_last)
        w, b = norm.weight.detach().contiguous(), norm.bias.detach().contiguous()
        status = library().gn_silu_bf16(x.data_ptr(), y.data_ptr(), w.data_ptr(), b.data_ptr(), n,
                                        x.shape[2] * x.shape[3], c, norm.num_groups, norm.eps)
        if status == 0:
            calls["fused"] += 1
            return y
    calls["aten"] += 1
    return _ATEN_SILU(norm(x))


class FusedGroupNormSiLU(torch.nn.Module):
    """Holds the GroupNorm it replaces (same parameters) and returns silu(GroupNorm(x)) in one call."""

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gn_silu(x, self.norm)


def swap_group_norms(model: torch.nn.Module, replace, skip: tuple[str, ...] = ()) -> torch.nn.Module:
    """A copy of `model` with each nn.GroupNorm `norm` replaced by `replace(norm)`, except those whose attribute
    name is in `skip`."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.GroupNorm) and name not in skip:
                setattr(parent, name, replace(child))
    return model


def fused_copy(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> torch.nn.Module:
    """A copy of `model` with each nn.GroupNorm wrapped in FusedGroupNormSiLU (run it with SiLU as identity),
    except those named in `skip` (GroupNorms no SiLU follows, e.g. diffusers' attention norm)."""
    return swap_group_norms(model, FusedGroupNormSiLU, skip)
