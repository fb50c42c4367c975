"""The model registry: every encoder, decoder and discriminator is a small registered builder.

In the manner of timm: `@register_model("litevae-b", kind="encoder")` on a function that sets the
architecture numbers and calls one constructor; `create_model(name, **overrides)` builds it, dropping
overrides that are None. Presets and checkpoints store these names, never class paths.
As in timm, `litevae_cli/models/__init__.py` imports every model family, whose decorators fill the
registry; this module imports none of them (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

KINDS = ("encoder", "decoder", "discriminator")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # one of KINDS
    builder: Callable[..., nn.Module]
    description: str
    test_variant: bool  # tiny variants registered so CPU tests stay fast


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, kind: str, description: str = "", test_variant: bool = False):
    """Decorator: register `builder(**kwargs) -> nn.Module` under `name`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = ModelEntry(name, kind, builder, doc if isinstance(doc, str) else "".join(doc), test_variant)
        return builder

    return wrap


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown model {name!r}; registered models: {known}")
    return _REGISTRY[name]


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model by name; keyword overrides that are None are dropped."""
    entry = get_entry(name)
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    return entry.builder(**kwargs)


def list_models(kind: str | None = None, include_test: bool = True) -> list[str]:
    """Names of registered models, optionally of one kind, sorted."""
    return sorted(
        e.name
        for e in _REGISTRY.values()
        if (kind is None or e.kind == kind) and (include_test or not e.test_variant)
    )
