"""Pretrained weights the toolkit uses but cannot ship: where they are looked up, and the LPIPS builder.

Files (looked up by name; downloaded only when asked, by `weights_download`):
- LPIPS backbones, in torchvision's cache `$TORCH_HOME/hub/checkpoints` (torch.hub.get_dir()):
  `alexnet-owt-7be5be79.pth` (AlexNet, the default) and `vgg16-397923af.pth` (VGG-16).
  LPIPS's own linear layers ship inside the `lpips` package.
- clean-fid's Inception, `inception-2015-12-05.pt`, looked up where clean-fid keeps it (/tmp by default).
Search order: `--weights-dir` first, then the standard caches. A missing file is a `UserError` that
names the file, its official URL and where to put it (commands check before doing any work), unless
downloads are on (`--download-weights`, LITEVAE_DOWNLOAD_WEIGHTS=1): then `weights_download` fetches it
into the first folder searched and verifies its pinned sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from litevae_cli.config import LPIPS_NETS
from litevae_cli.errors import UserError


@dataclass(frozen=True)
class WeightFile:
    filename: str
    url: str
    purpose: str


WEIGHTS = {
    "alex": WeightFile("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                       "the LPIPS AlexNet backbone"),
    "vgg": WeightFile("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
                      "the LPIPS VGG-16 backbone"),
    "inception": WeightFile("inception-2015-12-05.pt",
                            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
                            "clean-fid's Inception network (rFID)"),
}


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(key: str, weights_dir: str | Path | None = None) -> list[Path]:
    """Where `key`'s file is looked for, in order."""
    dirs = [Path(weights_dir)] if weights_dir else []
    dirs.append(torch_hub_checkpoints())
    if key == "inception":
        dirs += [Path("/tmp"), Path.home() / ".cache" / "clean-fid"]
    return dirs


def find_weight(key: str, weights_dir: str | Path | None = None) -> Path:
    """The path of a known weight file, or a UserError saying exactly what to download and where."""
    if key not in WEIGHTS:
        raise UserError(f"unknown weights {key!r}; known: {', '.join(WEIGHTS)}")
    wf = WEIGHTS[key]
    dirs = search_dirs(key, weights_dir)
    for d in dirs:
        if (d / wf.filename).is_file():
            return d / wf.filename
    from litevae_cli.metrics import weights_download  # lazy: it imports this module

    if weights_download.requested():
        return weights_download.download_weight(key, dirs[0])
    where = f"{dirs[0]} (--weights-dir)" if weights_dir else f"{torch_hub_checkpoints()} or a folder given as --weights-dir"
    raise UserError(f"missing {wf.filename} ({wf.purpose}); download {wf.url} and put it in {where}, "
                    f"or rerun with --download-weights (or {weights_download.ENV_DOWNLOAD}=1) to fetch and verify it")


def build_lpips(net: str = "alex", weights_dir: str | Path | None = None, random_backbone: bool = False):
    """A frozen `lpips.LPIPS` (v0.1, linear layers from the package) with its backbone loaded from disk.

    `random_backbone=True` keeps a randomly initialised backbone: only for tests and for plumbing checks,
    never for a reported metric or a training loss.
    """
    import lpips

    if net not in LPIPS_NETS:
        raise UserError(f"LPIPS network must be {' or '.join(LPIPS_NETS)}, got {net!r}")
    path = None if random_backbone else find_weight(net, weights_dir)
    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        from litevae_cli.files.checkpoint import safe_torch_load

        state = safe_torch_load(path, what="LPIPS backbone")
        # torchvision's state dict is for the whole classifier: keep `features.*`, mapped onto LPIPS's slices.
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        for slice_name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
            block = getattr(model.net, slice_name)
            for idx, layer in block.named_children():
                for pname, param in layer.named_parameters(recurse=False):
                    param.data.copy_(features[f"{idx}.{pname}"])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def lpips_available(net: str = "alex", weights_dir: str | Path | None = None) -> bool:
    try:
        find_weight(net, weights_dir)
        return True
    except UserError:
        return False

