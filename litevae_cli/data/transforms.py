"""Image -> tensor transforms: the stochastic training crop and the deterministic eval crops.

Training (`train_params` + `train_crop`): stochastic rescale by s ~ U[rescale] of the source size, raised
so the short side is >= R, a random RxR crop and a random h-flip, done as ONE PIL bicubic resize of just
the crop's box (equivalent to rescale-then-crop). Draw order: scale, left, top, flip; the draws depend on
the header size only, so they are the same with or without a JPEG draft.

JPEG draft (`train_crop_file` / `train_crop_bytes`): the rescaled full image is (rw, rh) <= the source
size; libjpeg is asked for at least that size and decodes at 1/2, 1/4 or 1/8 scale when the crop is
downscaled by 2x or more, then the same bicubic resize maps the box (in drafted pixels) to RxR. What it
changes: the pixels of a downscaled crop come from libjpeg's DCT-domain scaling followed by a milder
bicubic downscale instead of a full decode and one bicubic downscale, so values differ by a few levels;
the geometry (box, flip, size) and the kind of image (a crop downscaled at least as much as drafted) do
not. Non-JPEG files and crops downscaled by less than 2x decode in full, as before.

Eval (`eval_transform`): exact recipes, never drafted (metrics stay comparable): see CROPS.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from litevae_cli.data.decode import (DataError, decode_image_bytes_drafted, load_image_drafted, pil_to_tensor,
                                     pil_to_uint8)

DEFAULT_RESCALE = (0.5, 1.0)
# The eval crops (`--crop`), by name: what each does (encode-dataset records it, eval prints it).
CROPS = {
    "center": "resize the shorter side to R (PIL bicubic, antialiased), center crop RxR",
    "adm": "ADM center_crop_arr: halve with BOX while short side >= 2R, bicubic to short side R, center crop",
}


class TrainCrop(NamedTuple):
    box: tuple[float, float, float, float]  # in source pixels
    rescaled: tuple[int, int]  # (rw, rh): the whole image's size after the rescale
    flip: bool


def train_params(size: tuple[int, int], resolution: int, rng: np.random.Generator,
                 rescale: tuple[float, float] = DEFAULT_RESCALE) -> TrainCrop:
    """The random crop of an image of `size` (w, h); draws scale, left, top, flip from `rng`."""
    w, h = size
    s = max(float(rng.uniform(rescale[0], rescale[1])), resolution / min(w, h))
    rw, rh = max(resolution, round(w * s)), max(resolution, round(h * s))
    left = int(rng.integers(0, rw - resolution + 1))
    top = int(rng.integers(0, rh - resolution + 1))
    sx, sy = rw / w, rh / h
    box = (left / sx, top / sy, min(w, (left + resolution) / sx), min(h, (top + resolution) / sy))
    return TrainCrop(box, (rw, rh), bool(rng.random() < 0.5))


def apply_crop(img: Image.Image, crop: TrainCrop, resolution: int, scale: float = 1.0) -> torch.Tensor:
    """uint8 [3,R,R] of `crop` from `img`, which may be a draft of the source decoded at 1/`scale`."""
    box = tuple(v / scale for v in crop.box)
    if scale != 1.0:  # the last drafted row/column may be partial: stay inside the decoded image
        box = (box[0], box[1], min(box[2], img.size[0]), min(box[3], img.size[1]))
    out = img.resize((resolution, resolution), Image.BICUBIC, box=box)
    if crop.flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return pil_to_uint8(out)


def train_crop(img: Image.Image, resolution: int, rng: np.random.Generator,
               rescale: tuple[float, float] = DEFAULT_RESCALE) -> torch.Tensor:
    """uint8 [3,R,R] training crop of a decoded image (no draft)."""
    return apply_crop(img, train_params(img.size, resolution, rng, rescale), resolution)


def train_transform(img: Image.Image, resolution: int, rng: np.random.Generator,
                    rescale: tuple[float, float] = DEFAULT_RESCALE) -> torch.Tensor:
    """`train_crop` as float [3,R,R] in [-1,1]."""
    return train_crop(img, resolution, rng, rescale).float().div_(127.5).sub_(1.0)


class _Planner:
    """The `want` callback of the drafted loaders: draws the crop from the header size, asks for
    the rescaled size when the crop is downscaled by at least 2x (else no draft)."""

    def __init__(self, resolution, rng, rescale, draft: bool):
        self.args, self.draft, self.crop = (resolution, rng, rescale), draft, None

    def __call__(self, size):
        self.crop = train_params(size, *self.args)
        rw, rh = self.crop.rescaled
        return (rw, rh) if self.draft and min(size[0] // rw, size[1] // rh) >= 2 else None


def train_crop_file(path: str, resolution: int, rng: np.random.Generator,
                    rescale: tuple[float, float] = DEFAULT_RESCALE, draft: bool = True
                    ) -> tuple[torch.Tensor, tuple[int, int]]:
    """-> (uint8 training crop of an image file, JPEG-drafted when it pays (see the module docstring),
    the source's (width, height))."""
    plan = _Planner(resolution, rng, rescale, draft)
    img, size, scale = load_image_drafted(path, plan)
    if plan.crop is None:  # a cached sample image: never opened here
        plan(size)
    return apply_crop(img, plan.crop, resolution, scale), size


def train_crop_bytes(data: bytes, name: str, resolution: int, rng: np.random.Generator,
                     rescale: tuple[float, float] = DEFAULT_RESCALE, draft: bool = True
                     ) -> tuple[torch.Tensor, tuple[int, int]]:
    """`train_crop_file` for encoded bytes (a shard sample)."""
    plan = _Planner(resolution, rng, rescale, draft)
    img, size, scale = decode_image_bytes_drafted(data, name, plan)
    return apply_crop(img, plan.crop, resolution, scale), size


def eval_transform(img: Image.Image, resolution: int, crop: str = "center", uint8: bool = False):
    """-> (tensor [3,R,R], crop_box (l,t,r,b) in the resized image, (orig_w, orig_h)); the tensor is
    float in [-1,1], or uint8 with `uint8`. center: short side -> R (PIL bicubic, antialiased; long side
    int() as torchvision Resize), center crop (torchvision rounding). adm: guided-diffusion center_crop_arr."""
    w0, h0 = img.size
    if crop == "center":
        if w0 <= h0:
            size = (resolution, int(resolution * h0 / w0))
        else:
            size = (int(resolution * w0 / h0), resolution)
        img = img.resize(size, Image.BICUBIC) if size != img.size else img
        left = int(round((img.size[0] - resolution) / 2.0))
        top = int(round((img.size[1] - resolution) / 2.0))
    elif crop == "adm":
        while min(*img.size) >= 2 * resolution:
            img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
        scale = resolution / min(*img.size)
        img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
        left, top = (img.size[0] - resolution) // 2, (img.size[1] - resolution) // 2
    else:
        raise DataError(f"unknown crop {crop!r} (choose {' or '.join(CROPS)})")
    box = (left, top, left + resolution, top + resolution)
    cropped = img.crop(box)
    return (pil_to_uint8(cropped) if uint8 else pil_to_tensor(cropped)), box, (w0, h0)

