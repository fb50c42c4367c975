"""Reference weights the toolkit uses but cannot ship: find, verify, download (opt-in), and the LPIPS builder.

Files (looked up by name; downloaded only when asked, by `download_weight`):
- LPIPS backbones, in torchvision's cache `$TORCH_HOME/hub/checkpoints` (torch.hub.get_dir()):
  `alexnet-owt-7be5be79.pth` (AlexNet, the default) and `vgg16-397923af.pth` (VGG-16).
  LPIPS's own linear layers ship inside the `lpips` package.
- clean-fid's Inception, `inception-2015-12-05.pt`, looked up where clean-fid keeps it (/tmp by default).
Search order: `--weights-dir` first, then the standard caches. A missing file is a `UserError` that
names the file, its official URL and where to put it (commands check before doing any work), unless
downloads are on (`download=True`, the commands' --download-weights, or LITEVAE_DOWNLOAD_WEIGHTS=1): then
`download_weight` fetches it into the first folder searched and verifies its pinned sha256.

Download: nothing is fetched unless asked, as an argument (`find_weight(..., download=True)`: the
commands' --download-weights, passed down from pretrain, finetune, distill and eval) or by the environment
variable LITEVAE_DOWNLOAD_WEIGHTS=1. Then a file that `find_weight` cannot find is fetched into
`--weights-dir` when given, else the torch hub cache `$TORCH_HOME/hub/checkpoints` (searched by every
command, for the Inception file too, and kept across reboots unlike clean-fid's /tmp).
Source: the official URL, or LITEVAE_WEIGHTS_MIRROR (an http(s):// or file:// base URL or a plain folder)
joined with the file name, for sites without internet access.
The bytes go to a temp file in the target folder (`files.atomic.atomic_path`), hashed while they arrive;
only a file whose sha256 equals the pinned one is renamed into place. A mismatch is a one-line UserError
naming the file, the expected and the actual hash, and the temp file is removed: nothing is left behind.

Pinned hashes (full sha256; torchvision embeds only the first 8 hex digits in its file names, which
these match). Where each was checked:
- alexnet-owt-7be5be79.pth, vgg16-397923af.pth: several independent public records of the file fetched
  from download.pytorch.org (sizes 244,408,911 and 553,433,881 bytes), found with the search tool.
- inception-2015-12-05.pt: pinned by k-diffusion (crowsonkb/k-diffusion, k_diffusion/evaluation.py) for
  the same NVIDIA URL that clean-fid uses (95,607,719 bytes); clean-fid and torch-fidelity pin none.
None of the three could be downloaded and hashed here (no internet); tests use local files.
LPIPS's own linear layers (alex.pth / vgg.pth, v0.1) ship inside the `lpips` package: never downloaded.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import torch

from litevae_cli.config import LPIPS_NETS
from litevae_cli.errors import UserError
from litevae_cli.files.download import ENV_DOWNLOAD, download_verified, requested  # noqa: F401 (re-exported)
from litevae_cli.files.checkpoint import safe_torch_load


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


ENV_MIRROR = "LITEVAE_WEIGHTS_MIRROR"


@dataclass(frozen=True)
class Pin:
    sha256: str
    size: int  # bytes; for the progress bar when the server sends no Content-Length


PINNED: dict[str, Pin] = {
    "alexnet-owt-7be5be79.pth": Pin("7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", 244_408_911),
    "vgg16-397923af.pth": Pin("397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", 553_433_881),
    "inception-2015-12-05.pt": Pin("f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4", 95_607_719),
}

def source_url(filename: str, official: str) -> str:
    """The official URL, or LITEVAE_WEIGHTS_MIRROR's base joined with the file name."""
    mirror = os.environ.get(ENV_MIRROR, "").strip()
    if not mirror:
        return official
    scheme = urllib.parse.urlparse(mirror).scheme
    if not scheme:  # a plain folder
        return (Path(mirror).expanduser().resolve() / filename).as_uri()
    if scheme not in ("http", "https", "file"):
        raise UserError(f"{ENV_MIRROR} must be an http(s):// or file:// URL or a folder, got {mirror!r}")
    return mirror.rstrip("/") + "/" + urllib.parse.quote(filename)


def download_weight(key: str, folder: str | Path) -> Path:
    """Fetch `key`'s file into `folder`, verify its sha256, then move it into place; returns its path."""
    wf = WEIGHTS[key]
    pin = PINNED[wf.filename]
    folder = Path(folder)
    url = source_url(wf.filename, wf.url)
    dest = folder / wf.filename
    download_verified(url, dest, pin.sha256, pin.size)
    print(f"downloaded {wf.filename} ({wf.purpose}) from {url} into {folder}, sha256 verified", flush=True)
    return dest


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(key: str, weights_dir: str | Path | None = None) -> list[Path]:
    """Where `key`'s file is looked for, in order."""
    dirs = [Path(weights_dir)] if weights_dir else []
    dirs.append(torch_hub_checkpoints())
    if key == "inception":
        dirs += [Path("/tmp"), Path.home() / ".cache" / "clean-fid"]
    return dirs


def find_weight(key: str, weights_dir: str | Path | None = None, download: bool = False) -> Path:
    """The path of a known weight file; when missing, downloaded and verified if `download` (or
    LITEVAE_DOWNLOAD_WEIGHTS=1), else a UserError saying exactly what to download and where."""
    if key not in WEIGHTS:
        raise UserError(f"unknown weights {key!r}; known: {', '.join(WEIGHTS)}")
    wf = WEIGHTS[key]
    dirs = search_dirs(key, weights_dir)
    for d in dirs:
        if (d / wf.filename).is_file():
            return d / wf.filename
    if requested(download):
        return download_weight(key, dirs[0])
    where = f"{dirs[0]} (--weights-dir)" if weights_dir else f"{torch_hub_checkpoints()} or a folder given as --weights-dir"
    raise UserError(f"missing {wf.filename} ({wf.purpose}); download {wf.url} and put it in {where}, "
                    f"or rerun with --download-weights (or {ENV_DOWNLOAD}=1) to fetch and verify it")


def build_lpips(net: str = "alex", weights_dir: str | Path | None = None, random_backbone: bool = False,
                download: bool = False):
    """A frozen `lpips.LPIPS` (v0.1, linear layers from the package) with its backbone loaded from disk.

    `random_backbone=True` keeps a randomly initialised backbone: only for tests and for plumbing checks,
    never for a reported metric or a training loss.
    """
    import lpips

    if net not in LPIPS_NETS:
        raise UserError(f"LPIPS network must be {' or '.join(LPIPS_NETS)}, got {net!r}")
    path = None if random_backbone else find_weight(net, weights_dir, download)
    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
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
