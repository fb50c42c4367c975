"""LPIPS for the GPU bench: the lpips package where it imports, else a random-init stand-in of the same shape.

`StandinLPIPS` is lpips.LPIPS v0.1's computation (input scaling, the backbone's five feature taps, unit
normalisation over channels, squared differences, 1x1 linear heads, spatial means, summed) on a torchvision
AlexNet / VGG-16 feature stack with random weights: the same layers, FLOPs and memory, so speed figures hold;
its values mean nothing. `install()` makes `metrics.weights.build_lpips` return it when lpips is missing
(one line says so) and builds each network once for all arms; `lpips_source` says which one an arm used.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

# lpips.pretrained_networks: the torchvision `features` index ranges of its five slices, and their widths.
TAPS = {"vgg": ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)), "alex": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))}
CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


class _Scaling(nn.Module):
    """lpips.ScalingLayer: (x - shift) / scale."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _Taps(nn.Module):
    """lpips.pretrained_networks' backbone: the outputs of its five slices, in order."""

    def __init__(self, net: str):
        super().__init__()
        import torchvision

        features = (torchvision.models.vgg16 if net == "vgg" else torchvision.models.alexnet)(weights=None).features
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in TAPS[net])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for block in self.slices:
            x = block(x)
            taps.append(x)
        return taps


class StandinLPIPS(nn.Module):
    """lpips.LPIPS(net=net, version="0.1")'s forward with random weights (frozen, eval), with its attribute
    layout (`scaling_layer`, `net`, `lins`, `L`), so `training.losses.lpips_bf16` runs on it too."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        self.scaling_layer = _Scaling()
        self.net = _Taps(net)
        self.lins = nn.ModuleList(nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False)) for c in CHANNELS[net])
        self.L = len(self.lins)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = 0
        for fx, fy, head in zip(self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y)), self.lins):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((nx - ny) ** 2).mean((2, 3), keepdim=True)
        return total


def missing() -> str | None:
    """Why the lpips package cannot be used here, or None."""
    try:
        import lpips  # noqa: F401
    except ImportError as e:
        return f"{type(e).__name__}: {e}"
    return None


_STATE: dict = {}


def install() -> str | None:
    """Route `build_lpips` to the stand-in when lpips is missing, and build each network once (cached).
    Returns the reason lpips is missing (None when it is there); prints the skip line once."""
    if "missing" in _STATE:
        return _STATE["missing"]
    from litevae_cli.metrics import weights

    why = _STATE["missing"] = missing()
    if why is not None:
        print(f"skip: lpips package missing ({why}): LPIPS is a random-init stand-in of the same shape "
              "(speed figures only, marked as such)", flush=True)
        weights.build_lpips = lambda net="alex", *a, **k: StandinLPIPS(net)
    weights.build_lpips = functools.lru_cache(maxsize=None)(weights.build_lpips)
    return why


def lpips_source(net: str) -> dict:
    """The row fields that say which LPIPS network an arm ran."""
    why = install()
    if why is None:
        return {"lpips": f"LPIPS-{net.upper()} (lpips package), RANDOM-init backbone: same cost, value meaningless",
                "lpips_standin": False}
    return {"lpips": f"LPIPS-{net.upper()} STAND-IN (lpips missing): random-init {net} of the same shape",
            "lpips_standin": True}
