"""The kind of a profiled CPU op (issue 22 item 4): convolution / norm / activation / matmul / elementwise / memory,
`fused ...` for an inductor kernel, or other. A pure function of the op's name, as torch.profiler reports it.

Eager names are aten's (`aten::mkldnn_convolution`, `aten::native_group_norm`, `aten::silu_`, `aten::cat`, ...).
Compiled graphs call extern kernels under their aten / mkldnn names (`aten::convolution`,
`mkldnn::_convolution_pointwise`: a conv with its activation fused in is still a convolution) and their own C++
kernels, visible to the profiler when inductor builds them with `config.cpp.enable_kernel_profile` (names
`graph_<id>_cpp_fused_<aten ops>_<n>`: the sorted aten ops the kernel was made from, e.g.
`cpp_fused_native_group_norm_silu_3`). A fused kernel's kind lists the kinds of its ops, e.g.
`fused norm+activation` (casts and views inside a kernel do not count: under bf16 autocast nearly every kernel
has a `_to_copy`); inside a fused kernel a `convolution` origin is the layout copy around an extern conv
(inductor computes no conv in its own loops), so it counts as memory.
"""

from __future__ import annotations

import re

ACTIVATION = {"silu", "gelu", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "elu", "selu", "celu", "mish",
              "hardswish", "hardsigmoid", "hardtanh", "softplus", "glu", "logsigmoid", "prelu"}
MATMUL = {"mm", "bmm", "addmm", "baddbmm", "matmul", "linear", "softmax", "_softmax", "addbmm", "einsum"}
MEMORY = {"cat", "stack", "copy", "clone", "contiguous", "to", "_to_copy", "empty", "empty_strided", "empty_like",
          "resize", "as_strided", "view", "reshape", "_reshape_alias", "_unsafe_view", "permute", "transpose", "t",
          "slice", "select", "narrow", "split", "split_with_sizes", "chunk", "unbind", "expand", "index",
          "index_select", "gather", "zeros", "zeros_like", "zero", "fill", "ones", "ones_like", "full", "flip",
          "roll", "pixel_shuffle", "pixel_unshuffle", "unsqueeze", "squeeze", "flatten", "unfold", "repeat",
          "new_empty", "new_zeros", "alias", "detach", "lift_fresh", "resolve_conj", "resolve_neg", "dropout",
          "to_dense", "to_mkldnn", "constant_pad_nd", "pad", "reflection_pad2d", "replication_pad2d",
          "_copy_from", "_copy_from_and_resize", "set", "clone_", "reorder"}
ELEMENTWISE = {"add", "sub", "rsub", "mul", "div", "neg", "exp", "log", "sqrt", "rsqrt", "pow", "abs", "clamp",
               "clamp_min", "clamp_max", "where", "lerp", "mean", "sum", "var", "std", "var_mean", "square",
               "maximum", "minimum", "max", "min", "reciprocal", "sign", "avg_pool2d", "max_pool2d",
               "adaptive_avg_pool2d", "upsample_nearest2d", "upsample_bilinear2d", "_upsample_nearest_exact2d",
               "cos", "sin", "erf", "floor", "round", "eq", "ne", "lt", "gt", "le", "ge", "logical_and",
               "randn", "randn_like", "normal", "uniform", "bernoulli", "addcmul", "addcdiv", "lerp_", "scalar_tensor",
               "amax", "amin", "argmax", "prod", "cumsum", "exp2", "expm1", "log1p", "any", "all", "isfinite", "isnan"}
NORMS = ("group_norm", "layer_norm", "batch_norm", "instance_norm", "rms_norm", "native_norm", "norm")
KIND_ORDER = ("convolution", "norm", "activation", "matmul", "elementwise", "memory")
WRAPPER = ("torch-compiled region", "torchdynamo", "compiledfxgraph", "compiledfunction", "call compiled",
           "pregraph bytecode", "aotdispatcher", "runtime wrapper")
# Inside a fused kernel these cost nothing of their own (a cast or view folded into the kernel's loads and stores):
# a kernel of them alone is `fused memory`, otherwise they do not name its kind.
FUSED_FREE = {"_to_copy", "to", "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "select", "slice",
              "unsqueeze", "squeeze", "expand", "alias", "clone"}
FUSED_PREFIXES = ("cpp_fused_", "triton_poi_fused_", "triton_red_fused_", "triton_per_fused_", "triton_tem_fused_")
NORM_OPS = {"convolution", "native_group_norm", "native_layer_norm", "native_batch_norm", "group_norm", "layer_norm",
            "batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training", "instance_norm",
            "rms_norm", "_fused_rms_norm"}  # (and convolution): names a fused kernel may carry
KNOWN = ACTIVATION | MATMUL | MEMORY | ELEMENTWISE | NORM_OPS


def _base(name: str) -> str:
    """'aten::silu_' -> 'silu'; 'graph_0_cpp_fused_cat_1' -> 'cpp_fused_cat_1'."""
    n = name.strip().lower().split("::")[-1]
    n = re.sub(r"^graph_\d+_", "", n)
    return n[:-1] if n.endswith("_") and not n.endswith("__") else n


def op_kind(name: str) -> str:
    """The kind of one (non-fused) op name; 'compile wrapper' for dynamo's and inductor's own regions (their
    self time: guards, the generated Python wrapper; all the kernels when kernel profiling is off); 'other'
    when it is none of them (bookkeeping such as aten::result_type)."""
    if any(w in name.lower() for w in WRAPPER):
        return "compile wrapper"
    n = _base(name)
    if "conv" in n:  # conv2d, convolution, _convolution, mkldnn_convolution, _convolution_pointwise, slow_conv...
        return "convolution"
    if any(k in n for k in NORMS) and "normal" not in n:
        return "norm"
    if n in ACTIVATION:
        return "activation"
    if n in MATMUL or "attention" in n or "linear" in n:
        return "matmul"
    if n in MEMORY or n.startswith(("copy", "reflection_pad", "replication_pad")) or "reorder" in n:
        return "memory"
    if n in ELEMENTWISE:
        return "elementwise"
    return "other"


def fused_ops(name: str) -> list[str] | None:
    """The aten ops named in a fused kernel's name (None when it is not one): longest known names first."""
    n = _base(name)
    prefix = next((p for p in FUSED_PREFIXES if n.startswith(p)), None)
    if prefix is None:
        return None
    body = re.sub(r"_\d+$", "", n[len(prefix):])
    parts, ops, i = body.split("_"), [], 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            cand = "_".join(parts[i:j])
            if cand in KNOWN:  # '_to_copy' is the parts ['', 'to', 'copy']
                ops.append(cand)
                i = j
                break
        else:
            if parts[i]:
                ops.append(parts[i])  # an op this table does not know: kept, counted as other
            i += 1
    return ops


def kind_order(kind: str) -> tuple:
    """Sort key of kinds for tables: KIND_ORDER, then fused kinds, then compile wrapper, then other."""
    if kind in KIND_ORDER:
        return (0, KIND_ORDER.index(kind), "")
    return (1, 0, kind) if kind.startswith("fused") else (2 if kind == "compile wrapper" else 3, 0, kind)


def classify(name: str) -> str:
    """convolution | norm | activation | matmul | elementwise | memory | fused <kinds joined by +> |
    compile wrapper | other."""
    ops = fused_ops(name)
    if ops is None:
        return op_kind(name)
    kinds = set()
    for op in [o for o in ops if o not in FUSED_FREE] or ["_to_copy"]:
        k = op_kind(op)
        kinds.add("memory" if k == "convolution" else k)  # the layout copy around an extern conv (docstring)
    named = [k for k in KIND_ORDER if k in kinds]
    if not named:
        return "fused other"
    return "fused " + "+".join(named)
