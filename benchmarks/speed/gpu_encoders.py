"""The encoder arms of `gpu_bench.py` (issue 22 item 5): litevae-b's encoder against SD-VAE's, each at its best.

Both at 256 px, batch 16 and batch 1, nz 4 (the SD 1.x latent width), random init, inference mode; each
setting of eager / compiled x fp32 / bf16 autocast x NCHW / channels_last is one arm, and the comparison
takes each model's fastest setting (all settings listed). The peer is diffusers' AutoencoderKL (SD 1.x
configuration: its encoder and quant conv); without diffusers, the registry's `sd-vae-encoder` (the same
architecture, 34.16 M), and the row says so. fp32 on CUDA runs with PyTorch's default TF32 setting for
convolutions (recorded). Compiled = `torch.compile(model)` (default mode), one graph per setting and batch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn

from gpu_train_arms import peak_memory, sync, time_calls

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/harness.py
NZ = 4


class DiffusersEncoder(nn.Module):
    """AutoencoderKL's encoder + quant conv: the moments an SD-VAE encode computes."""

    def __init__(self, vae):
        super().__init__()
        self.encoder, self.quant_conv = vae.encoder, vae.quant_conv

    def forward(self, x):
        return self.quant_conv(self.encoder(x))


_PEER: dict = {}


def peer(registry_name: str, use_diffusers: bool) -> tuple[str, str]:
    """(label, source) of the SD-VAE encoder this machine can build; prints a skip line when diffusers is missing."""
    if not use_diffusers:
        return registry_name, "registry (tiny stand-in for the dry run)"
    if "why" not in _PEER:
        try:
            import diffusers  # noqa: F401
            _PEER["why"] = None
        except ImportError as e:
            _PEER["why"] = f"{type(e).__name__}: {e}"
            print(f"skip: diffusers missing ({_PEER['why']}): the SD-VAE peer is the registry's {registry_name} "
                  "(the same SD 1.x encoder architecture)", flush=True)
    if _PEER["why"] is None:
        return "sd-vae (diffusers AutoencoderKL encoder)", "diffusers AutoencoderKL, SD 1.x config, random init"
    return registry_name, f"registry {registry_name} (diffusers missing: {_PEER['why']})"


_BUILT: dict = {}


def build(label: str) -> nn.Module:
    """A fresh copy of the model (built once on the CPU: diffusers builds the whole VAE)."""
    import copy

    from litevae_cli.models import create_model

    if label not in _BUILT:
        torch.manual_seed(0)
        if label.startswith("sd-vae (diffusers"):
            from harness import diffusers_sd_vae

            _BUILT[label] = DiffusersEncoder(diffusers_sd_vae())
        else:
            _BUILT[label] = create_model(label, nz=NZ).eval()
    return copy.deepcopy(_BUILT[label])


def encoder_arm(label: str, device: str, batch: int, resolution: int, precision: str,
                channels_last: bool, compiled: bool, backend: str, warmup: int, steps: int, max_s: float) -> dict:
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = build(label).to(dev).to(memory_format=fmt).eval()
    if compiled:
        net = torch.compile(net, backend=backend)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1).to(dev).contiguous(memory_format=fmt)
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision == "bf16" else None

    def call():
        with torch.inference_mode():
            if ctx is None:
                net(x)
            else:
                with ctx():
                    net(x)

    if dev.type == "cuda":
        sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    timing = time_calls(call, batch, dev, warmup, steps, max_s)
    return {"model": label, "batch": batch, "resolution": resolution, "precision": precision,
            "layout": "CL" if channels_last else "NCHW", "compiled": compiled,
            "compile_backend": backend if compiled else None,
            "tf32_conv": torch.backends.cudnn.allow_tf32 if dev.type == "cuda" else None,
            "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2), **timing, **peak_memory(dev)}


SETTINGS_EAGER = [(p, cl, False) for p in ("bf16", "fp32") for cl in (True, False)]
SETTINGS_COMPILED = [(p, cl, True) for p in ("bf16", "fp32") for cl in (True, False)]


def best_of(rows: list[dict]) -> dict:
    """Per batch: each model's fastest setting and the litevae / peer ratio of the two bests."""
    out = {}
    for batch in sorted({r["batch"] for r in rows}, reverse=True):
        best = {}
        for r in rows:
            if r["batch"] != batch:
                continue
            if r["model"] not in best or r["img_s"]["median"] > best[r["model"]]["img_s"]["median"]:
                best[r["model"]] = r
        names = list(best)
        entry = {m: {k: best[m][k] for k in ("precision", "layout", "compiled")} | {"img_s": best[m]["img_s"]["median"]}
                 for m in names}
        if len(names) == 2:
            lite = next(n for n in names if n.startswith("litevae"))
            other = next(n for n in names if n != lite)
            entry["ratio"] = best[lite]["img_s"]["median"] / best[other]["img_s"]["median"]
        out[str(batch)] = entry
    return out
