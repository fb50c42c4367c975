"""rFID: Fréchet Inception distance between originals and reconstructions, with clean-fid's clean mode.

This module owns the rFID pipeline used by `litevae eval`:
- The network is clean-fid's TorchScript Inception, `inception-2015-12-05.pt`, located OFFLINE with
  `weights.find_weight("inception", weights_dir)` (`--weights-dir`, the torch hub cache, /tmp, and
  ~/.cache/clean-fid). Nothing is downloaded. The file is TorchScript and is loaded with
  `torch.jit.load` (inside clean-fid's own `InceptionV3W` wrapper), so users must put the OFFICIAL file
  (https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt)
  there: a TorchScript file can run code, so never point it at a file of unknown origin.
- Clean mode = clean-fid's own resize, `cleanfid.resize.build_resizer("clean")`
  (`make_resizer("PIL", False, "bicubic", (299, 299))`: PIL bicubic per channel in float mode, no
  quantisation after), applied to the uint8 HWC images; features are the 2048-d pool3 activations of
  the resized [0, 255] float images (InceptionV3W normalises by (x - 128) / 128 itself).
- Statistics are streamed: per set, the count, the float64 sum and the float64 sum of outer products,
  so memory stays bounded and ranks combine by summing. The covariance is the unbiased one that
  `np.cov(feats, rowvar=False)` gives (clean-fid's `fid_from_feats`), and the distance is
  `cleanfid.fid.frechet_distance`: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)).
- The feature extractor is injectable (any callable float [N,3,299,299] in [0,255] -> [N, D]) so tests
  run without the Inception file.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from litevae_cli.metrics.weights import find_weight

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
INCEPTION_DIM = 2048
CLEAN_SIZE = (299, 299)


def locate_inception(weights_dir: str | Path | None = None) -> Path:
    """The Inception file's path, or a UserError naming the file, its URL and where to put it."""
    return find_weight("inception", weights_dir)


def load_inception(path: str | Path, device: torch.device) -> FeatureFn:
    """clean-fid's InceptionV3W (clean mode: no resize inside) from the located file; never downloads."""
    from cleanfid.inception_torchscript import InceptionV3W

    path = Path(path)
    if path.name != "inception-2015-12-05.pt":  # InceptionV3W joins this exact name to its folder
        raise ValueError(f"expected a file named inception-2015-12-05.pt, got {path}")
    with warnings.catch_warnings():  # recent torch marks torch.jit.load deprecated; the file is TorchScript
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        net = InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval()

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device, torch.float32))

    return features


def clean_resize(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float32 [N,3,299,299] in [0,255], with clean-fid's clean-mode resizer."""
    from cleanfid.resize import build_resizer

    if images_u8.dtype != torch.uint8:
        raise TypeError(f"clean_resize expects uint8 images, got {images_u8.dtype}")
    resize = build_resizer("clean")
    hwc = images_u8.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([resize(img) for img in hwc])  # [N,299,299,3] float32
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class FeatureStats:
    """Streaming mean and (unbiased) covariance of feature vectors, in float64."""

    def __init__(self, dim: int):
        self.dim = dim
        self.count = torch.zeros((), dtype=torch.float64)
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor) -> None:
        f = feats.detach().to("cpu", torch.float64).reshape(feats.shape[0], -1)
        if f.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d features, got {f.shape[1]}")
        self.count += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def reduce_across_ranks(self, all_reduce_sum) -> None:
        """Sum over ranks with `all_reduce_sum(tensor) -> tensor` (runtime.all_reduce_sum)."""
        self.count = all_reduce_sum(self.count)
        self.sum = all_reduce_sum(self.sum)
        self.outer = all_reduce_sum(self.outer)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """mu and the unbiased covariance (divide by n - 1), as np.cov(feats, rowvar=False)."""
        n = float(self.count)
        if n < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {int(n)}")
        mu = self.sum / n
        cov = (self.outer - n * torch.outer(mu, mu)) / (n - 1)
        return mu.numpy(), cov.numpy()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """clean-fid's Fréchet distance (scipy sqrtm, eps offset on a singular product)."""
    from cleanfid.fid import frechet_distance as _fd

    with contextlib.redirect_stdout(sys.stderr):  # its singular-product notice must not mix into tables/JSON
        return float(_fd(mu1, sigma1, mu2, sigma2))


class RFID:
    """rFID between originals and reconstructions fed in matching uint8 batches.

    `feature_fn`: the Inception (load_inception) or any injected extractor; `resize`: clean-fid's clean
    resizer by default (inject an identity or smaller resize for tests); `dim`: the feature width.
    """

    def __init__(self, feature_fn: FeatureFn, dim: int = INCEPTION_DIM,
                 resize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        self.feature_fn = feature_fn
        self.resize = resize or clean_resize
        self.real = FeatureStats(dim)
        self.fake = FeatureStats(dim)

    def update(self, real_u8: torch.Tensor, recon_u8: torch.Tensor) -> None:
        self.real.update(self.feature_fn(self.resize(real_u8)))
        self.fake.update(self.feature_fn(self.resize(recon_u8)))

    def compute(self, all_reduce_sum=None) -> float:
        if all_reduce_sum is not None:
            self.real.reduce_across_ranks(all_reduce_sum)
            self.fake.reduce_across_ranks(all_reduce_sum)
        mu1, s1 = self.real.mean_cov()
        mu2, s2 = self.fake.mean_cov()
        return frechet_distance(mu1, s1, mu2, s2)
