"""How the models meet torch.compile: which input dims are dynamic.

Every registered model traces as one graph under `torch.compile(model, fullgraph=True)` (no graph break;
tests/test_compile.py). The dims that change between calls are the batch and the two sides (phase A/B
resolutions, the last short batch of an epoch). `mark_dynamic(x)` marks them on an input before the
compiled call, so a new batch size or resolution reuses the graph: no recompile. Unmarked, torch's
default (`dynamic=None`) recompiles once per kind of dim that changes (once for the batch, once for the
sides) and then stays dynamic. Batch 1 is torch's 0/1 specialisation: it always compiles its own graph.
"""

from __future__ import annotations

import torch

IMAGE_DYNAMIC_DIMS = (0, 2, 3)  # N, H, W of [N, C, H, W] images and latents; channels are fixed by the model


def mark_dynamic(x: torch.Tensor) -> torch.Tensor:
    """Mark x's batch and spatial dims as dynamic for torch.compile (a hint: a dim that the graph
    needs constant stays specialised, without an error); returns x."""
    if x.ndim != 4:
        raise ValueError(f"mark_dynamic expects a [N, C, H, W] tensor, got shape {tuple(x.shape)}")
    for dim in IMAGE_DYNAMIC_DIMS:
        torch._dynamo.maybe_mark_dynamic(x, dim)
    return x
