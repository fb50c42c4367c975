"""Parameter and FLOP counts of registered models, for `litevae models` and the benchmarks.

FLOPs are counted with torch.utils.flop_counter on the meta device (no memory, no compute) and
reported as FLOP = 2 x MAC. open-LiteVAE's "FLOPs" column is MACs: litevae-b's 37.4 G there is
our 75.7 GFLOP.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from litevae_cli.errors import UserError
from litevae_cli.models.registry import KINDS, create_model, get_entry, list_models


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def example_input(name: str, module: torch.nn.Module, resolution: int, batch: int = 1) -> torch.Tensor:
    """An input of the right shape: an image for encoders/discriminators, a latent for decoders."""
    if get_entry(name).kind == "decoder":
        return torch.empty(batch, module.nz, resolution // 8, resolution // 8)
    return torch.empty(batch, 3, resolution, resolution)


def model_complexity(name: str, resolution: int = 256, **overrides) -> dict:
    """{'name', 'kind', 'params', 'gflops_<res>'} for one image at `resolution`, counted on meta."""
    with torch.device("meta"):
        model = create_model(name, **overrides)
        x = example_input(name, model, resolution)
        with FlopCounterMode(display=False) as counter:
            model(x)
    return {"name": name, "kind": get_entry(name).kind, "params": count_params(model),
            f"gflops_{resolution}": counter.get_total_flops() / 1e9}


def registry_rows(kind: str | None = None, include_test: bool = True) -> list[dict]:
    """`litevae models`: one row per registered model (of `kind`), sorted by kind then name: name, kind,
    params, gflops_256, test_variant, description."""
    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    rows = []
    for name in list_models(kind, include_test=include_test):
        entry = get_entry(name)
        rows.append({**model_complexity(name), "test_variant": entry.test_variant, "description": entry.description})
    return sorted(rows, key=lambda r: (r["kind"], r["name"]))
