"""Decoding one image: what a path is, the pixel cap, PIL -> 8-bit RGB, and the uint8 <-> [-1,1] mapping.

- `file_problem(path)`: None for a regular file (links followed), else what the path is instead ("is a
  FIFO, not an image file", "is a symlink loop", ...). Checked with stat before any open, so a FIFO is
  never opened (a read would block) and the message names what the file is.
- Pixel cap (`max_pixels`): every decode checks the header's size (PIL opens lazily) before decoding
  and refuses an image over the cap with one line naming the file. Default 64 megapixels: above every
  full-frame camera (61 MP sensors give 9504x6336 = 60.2 MP), so no ordinary photo is refused, while a
  decoded image stays under 192 MB (RGB uint8) per loader worker; the 108 MP scans and panoramas that
  took minutes and GBs are refused. `LITEVAE_MAX_PIXELS=N` sets it (0: no cap). PIL's own bomb check
  (`Image.MAX_IMAGE_PIXELS`) is set to the same cap and its DecompressionBombWarning is silenced around
  our decodes, since the cap check reports instead.
- Colour handling (`to_rgb`): L/1/P/CMYK/YCbCr -> RGB; 16-bit and 32-bit greyscale ("I;16", "I", "F")
  are rescaled to 8 bit (never clipped at 255); anything with alpha is COMPOSITED ON WHITE. EXIF
  orientation is not applied (same as torchvision/clean-fid/ADM pipelines).
- JPEG draft (`want=` of the `*_drafted` loaders): the caller names, from the header size, the smallest
  size it needs; libjpeg then decodes at 1/2, 1/4 or 1/8 scale (DCT-domain scaling) while staying at
  least that size. Used only by the training crops, which are downscaled further afterwards.
- Loaders ship uint8 [3,H,W]; `to_model_range` maps to float [-1,1] where the batch is consumed (on
  the device), `pil_to_tensor` does it on the host for the paths that want float at once.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import stat
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from litevae_cli.data import hf_datasets
from litevae_cli.data import samples as sample_images
from litevae_cli.errors import UserError

MAX_PIXELS_ENV = "LITEVAE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 64_000_000

Want = Optional[Callable[[tuple[int, int]], Optional[tuple[int, int]]]]


class DataError(UserError):
    """A user-facing data problem (bad path, empty source, unreadable file); message is one line."""


# ----------------------------------------------------------------------------- what a path is
def file_problem(path: str) -> Optional[str]:
    """None when `path` is a regular file (symlinks followed), else what it is, to follow its name."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "is a broken symlink" if os.path.islink(path) else "not found"
    except OSError as e:
        return "is a symlink loop" if e.errno == errno.ELOOP else f"cannot be read: {e.strerror}"
    mode = st.st_mode
    kinds = ((stat.S_ISREG, None), (stat.S_ISDIR, "is a directory, not an image file"),
             (stat.S_ISFIFO, "is a FIFO, not an image file"), (stat.S_ISSOCK, "is a socket, not an image file"),
             (stat.S_ISCHR, "is a character device, not an image file"),
             (stat.S_ISBLK, "is a block device, not an image file"))
    return next((what for test, what in kinds if test(mode)), "is not a regular file")


def check_image_path(path: str) -> None:
    """DataError (one line) unless `path` is a regular file."""
    problem = file_problem(path)
    if problem == "not found":
        raise DataError(f"image file not found: {path}")
    if problem:
        raise DataError(f"{path} {problem}")


# ----------------------------------------------------------------------------- pixel cap
def max_pixels() -> int:
    """The pixel cap in force (LITEVAE_MAX_PIXELS, default DEFAULT_MAX_PIXELS); 0 means none."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text)) if re.fullmatch(r"\d+(\.\d*)?(e\d+)?", text, re.I) else -1
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        raise UserError(f"{MAX_PIXELS_ENV}={text!r}: must be a whole number of pixels (0: no cap)")
    return value


def _over_cap(name: str, w: int, h: int, cap: int) -> DataError:
    return DataError(f"{name} is {w}x{h} = {w * h / 1e6:.1f} megapixels, over the {cap / 1e6:g}-megapixel cap "
                     f"(set {MAX_PIXELS_ENV} to change it, 0 for none)")


def check_pixels(size: tuple[int, int], name: str, cap: Optional[int] = None) -> None:
    """DataError when an image of `size` (w, h) is over the pixel cap."""
    cap = max_pixels() if cap is None else cap
    if cap and size[0] * size[1] > cap:
        raise _over_cap(name, size[0], size[1], cap)


# ----------------------------------------------------------------------------- decoding
def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited on white; >8-bit greyscale is rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img).astype(np.float64)
        if img.mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0  # float image in [0, 1]
        elif img.mode.startswith("I;16") or (img.mode == "I" and a.size and a.max() > 255):
            a = a / 257.0  # 16-bit range (PNG 16-bit opens as "I" or "I;16")
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _open_drafted(fp, name: str, want: Want = None) -> tuple[Image.Image, tuple[int, int], float]:
    """-> (RGB image, header size, draft scale: header size / decoded size, 1 when not drafted)."""
    cap = max_pixels()
    Image.MAX_IMAGE_PIXELS = cap or None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                size = im.size
                check_pixels(size, name, cap)
                scale = 1.0
                target = want(size) if want is not None else None
                if target is not None and im.format == "JPEG":
                    drafted = im.draft("RGB", target)
                    scale = size[0] / drafted[1][2] if drafted else 1.0
                im.load()
                return to_rgb(im), size, scale
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # over twice the cap: PIL refuses in open, before our check
        m = re.search(r"\((\d+) pixels\)", str(e))
        raise DataError(f"{name} has {int(m.group(1)) / 1e6:.1f} megapixels, over the {cap / 1e6:g}-megapixel "
                        f"cap (set {MAX_PIXELS_ENV} to change it, 0 for none)" if m else f"{name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types on bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read image {name}: {msg}") from None


def _open(fp, name: str) -> Image.Image:
    return _open_drafted(fp, name)[0]


def load_image_drafted(path: str, want: Want = None) -> tuple[Image.Image, tuple[int, int], float]:
    """`load_image` with a JPEG draft request (see the module docstring) -> (image, header size, scale)."""
    if hf_datasets.is_item(path):  # a row of an `hf:` dataset: its encoded image bytes
        return _open_drafted(io.BytesIO(hf_call(hf_datasets.read_item, path)), path, want)
    check_image_path(path)
    if os.path.dirname(os.path.abspath(path)) == _sample_dir():
        img = _load_sample_image(path)
        return img, img.size, 1.0
    return _open_drafted(path, path, want)


def load_image(path: str) -> Image.Image:
    """Open one image file as 8-bit RGB PIL; DataError (one line) when missing, not a regular file,
    over the pixel cap or unreadable.

    The embedded sample photos are decoded once per process and the same PIL image is returned on
    every later call (callers only crop/resize, which make new images): training draws thousands of
    crops from 7 photos, and decoding the 1411 px retina JPEG for each cost ~6% of a demo step.
    """
    return load_image_drafted(path)[0]


@functools.lru_cache(maxsize=1)
def _sample_dir() -> str:
    return os.path.abspath(sample_images.sample_data_dir())


@functools.lru_cache(maxsize=len(sample_images.SAMPLE_IMAGES))
def _load_sample_image(path: str) -> Image.Image:
    img = _open(path, path)
    img.load()
    return img


def hf_call(fn, *args):
    """Call into `hf_datasets`; its HFError becomes a one-line DataError."""
    try:
        return fn(*args)
    except hf_datasets.HFError as err:
        raise DataError(str(err)) from None


def decode_image_bytes(data: bytes, name: str) -> Image.Image:
    return _open(io.BytesIO(data), name)


def decode_image_bytes_drafted(data: bytes, name: str, want: Want = None):
    """`decode_image_bytes` with a JPEG draft request -> (image, header size, scale)."""
    return _open_drafted(io.BytesIO(data), name, want)


# ----------------------------------------------------------------------------- tensors
def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL -> uint8 [3,H,W] (what loader workers ship: a quarter of float32's bytes)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape, any device, any memory format) -> float32 in [-1,1] on the same device
    and layout, as `pil_to_tensor` gives on the host; float tensors are returned unchanged. Call it after
    the batch is on the device, so the host and the copy move a quarter of the bytes."""
    if x.dtype != torch.uint8:
        return x
    return x.float().div_(127.5).sub_(1.0)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL -> float [3,H,W] in [-1,1]."""
    a = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    return a.float().div_(127.5).sub_(1.0)
