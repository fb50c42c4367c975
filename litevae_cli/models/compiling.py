"""How the models meet torch.compile: which input dims are dynamic.

Every registered model traces as one graph under `torch.compile(model, fullgraph=True)` (no graph break;
tests/test_compile.py). The dims that change between calls are the batch and the two sides (phase A/B
resolutions, the last short batch of an epoch). `mark_dynamic(x)` marks them on an input before the
compiled call, so a new batch size or resolution reuses the graph: no recompile. Unmarked, torch's
default (`dynamic=None`) recompiles once per kind of dim that changes (once for the batch, once for the
sides) and then stays dynamic. Batch 1 is torch's 0/1 specialisation: it always compiles its own graph.

`compile_in_place` is what `runtime.compile` / `--compile` do to a run's models: `nn.Module.compile`, which
compiles the module's forward where it sits. Unlike `torch.compile(module)` it adds no wrapper, so
parameters, state_dict keys (no `_orig_mod.` prefix), checkpoints, EMA copies and DDP are untouched and a
compiled run resumes an eager one and back. The backend is inductor unless `runtime.compile_backend` (or
LITEVAE_COMPILE_BACKEND where a command has no config) names another (dynamo's "eager" traces only and is
bit-exact with eager: what the tests use, since CPU inductor builds take minutes).
"""

from __future__ import annotations

import os

import torch

from litevae_cli.errors import UserError

COMPILE_BACKEND_ENV = "LITEVAE_COMPILE_BACKEND"
DEFAULT_COMPILE_BACKEND = "inductor"

IMAGE_DYNAMIC_DIMS = (0, 2, 3)  # N, H, W of [N, C, H, W] images and latents; channels are fixed by the model


def mark_dynamic(x: torch.Tensor) -> torch.Tensor:
    """Mark x's batch and spatial dims as dynamic for torch.compile (a hint: a dim that the graph
    needs constant stays specialised, without an error); returns x."""
    if x.ndim != 4:
        raise ValueError(f"mark_dynamic expects a [N, C, H, W] tensor, got shape {tuple(x.shape)}")
    for dim in IMAGE_DYNAMIC_DIMS:
        torch._dynamo.maybe_mark_dynamic(x, dim)
    return x


def compile_backend(name: str | None = None) -> str:
    """The dynamo backend to use: `name`, else LITEVAE_COMPILE_BACKEND, else inductor; one line if unknown."""
    chosen = name or os.environ.get(COMPILE_BACKEND_ENV) or DEFAULT_COMPILE_BACKEND
    known = torch._dynamo.list_backends(exclude_tags=())
    if chosen not in known:
        raise UserError(f"compile backend {chosen!r} is not one of torch's: {', '.join(sorted(known))}")
    return chosen


def compile_in_place(*modules: torch.nn.Module | None, backend: str | None = None) -> list[str]:
    """Compile each module's forward in place (module docstring); None entries are skipped. Returns the
    compiled modules' class names, for the run record."""
    chosen = compile_backend(backend)
    names = []
    for module in modules:
        if module is not None:
            module.compile(backend=chosen)
            names.append(type(module).__name__)
    return names
