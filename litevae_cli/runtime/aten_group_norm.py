"""GroupNorm as one opaque op under torch.compile, so a compiled graph runs ATen's GroupNorm kernels.

Why (issue 22 item 4, measured in BENCHMARKS.md "GroupNorm under compile"): inductor decomposes GroupNorm into
its own reductions and fuses them with the SiLU and add around them. On CPU those generated kernels took 725 ms
per litevae-b forward (batch 8, 256 px, bf16 channels_last) against ~280 ms for ATen's GroupNorm and the ops
around it in eager, which made the compiled encoder 0.76x of eager. Kept opaque, ATen's single-pass kernel
runs inside the graph and inductor still fuses the SiLU, adds and cats between the convolutions.

- `litevae::group_norm` returns (y, mean, rstd) from `aten.native_group_norm`; y's layout follows x (`_layout`:
  ATen keeps channels_last on CPU, while the stock meta kernel says contiguous, which is why a plain inductor
  fallback for `native_group_norm` fails its stride check).
- `litevae::group_norm_backward` wraps `aten.native_group_norm_backward` the same way (inductor would
  decompose it too); `register_autograd` joins the two, so training compiles as well.
- `AtenGroupNorm` is `nn.GroupNorm` with that forward; `route_group_norm` switches the class of a module's
  affine GroupNorms in place (same parameters and state_dict keys, so checkpoints and resume are untouched).
  Values are ATen's own in both directions: bit-identical to eager `nn.GroupNorm` (tests/test_aten_group_norm.py).
CPU autocast leaves group_norm in its input's dtype, so the op needs no autocast rule of its own.
Inductor's on-disk graph cache keys on the graph, not on the fakes below: a change to what a fake returns must
rename the op (e.g. `litevae::group_norm_v2`), or graphs cached by the old version keep the old strides.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

aten = torch.ops.aten


def _shape(x: Tensor) -> tuple[int, int, int]:
    """(N, C, HxW) of an [N, C, *spatial] tensor, as native_group_norm takes them."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


@torch.library.custom_op("litevae::group_norm", mutates_args=())
def group_norm(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    n, c, hw = _shape(x)
    y, mean, rstd = aten.native_group_norm(x, weight, bias, n, c, hw, groups, eps)
    return y.contiguous(memory_format=_layout(x)), mean, rstd  # already so: ATen follows x's suggested layout


@group_norm.register_fake
def _group_norm_fake(x, weight, bias, groups, eps):
    # ATen's CPU kernel keeps the statistics in the parameters' dtype when x is bf16 and they are fp32 (its
    # "mixed type" path); the stock meta kernel says x's dtype.
    stats = x.new_empty((x.shape[0], groups), dtype=weight.dtype if weight.dtype != x.dtype else x.dtype)
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_layout(x)), stats, \
        torch.empty_like(stats)


@torch.library.custom_op("litevae::group_norm_backward", mutates_args=())
def group_norm_backward(grad: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, weight: Tensor,
                        groups: int) -> tuple[Tensor, Tensor, Tensor]:
    n, c, hw = _shape(x)
    layout = _layout(x)
    dx, dw, db = aten.native_group_norm_backward(grad.contiguous(memory_format=layout), x, mean, rstd, weight,
                                                 n, c, hw, groups, [True, True, True])
    return dx.contiguous(memory_format=layout), dw, db


@group_norm_backward.register_fake
def _group_norm_backward_fake(grad, x, mean, rstd, weight, groups):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_layout(x)), torch.empty_like(weight), \
        torch.empty_like(weight)


def _layout(x: Tensor) -> torch.memory_format:
    """The layout of the op's outputs: channels_last for a channels_last 4-D x (as ATen's CPU kernel keeps it),
    contiguous otherwise (ATen's output for any other stride order, e.g. the transposed [N, C, L] that diffusers'
    attention normalises). The real op converts to it (a no-op where ATen already agrees), so fake and real match."""
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def _setup_context(ctx, inputs, output):
    x, weight, _, groups, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.groups = groups


def _backward(ctx, grad_y, _grad_mean, _grad_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    dx, dw, db = group_norm_backward(grad_y, x, mean, rstd, weight, ctx.groups)
    return dx, dw, db, None, None


group_norm.register_autograd(_backward, setup_context=_setup_context)


class AtenGroupNorm(nn.GroupNorm):
    """nn.GroupNorm whose forward is the opaque `litevae::group_norm` op (module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return group_norm(x, self.weight, self.bias, self.num_groups, self.eps)[0]


def route_group_norm(*modules: nn.Module | None) -> int:
    """Switch every affine nn.GroupNorm inside `modules` to AtenGroupNorm, in place; returns how many.
    Non-affine GroupNorms and subclasses of nn.GroupNorm are left as they are."""
    count = 0
    for module in modules:
        for m in module.modules() if module is not None else ():
            if type(m) is nn.GroupNorm and m.affine:
                m.__class__ = AtenGroupNorm
                count += 1
    return count
