"""Shared data layer: image sources, decoding and transforms.

Owns everything between a `--data` spec and a batch of tensors, for training (phase A/B),
encode-dataset, eval, reconstruct and inspect-latents. Images are float tensors [3,H,W] in [-1,1], RGB.
Colour handling (`to_rgb`): L/1/P/CMYK/YCbCr -> RGB; 16-bit and 32-bit greyscale ("I;16", "I", "F")
are rescaled to 8 bit (never clipped at 255); anything with alpha (RGBA, LA, PA, P+transparency) is
COMPOSITED ON WHITE. EXIF orientation is not applied (same as torchvision/clean-fid/ADM pipelines).

Sources (`resolve_source`):
  * `sample`, `sample-holdout`, `sample-all`: the embedded set (see `litevae_cli.data.samples`),
    keys `sample/<name>`.
  * a directory: recursive (jpg/jpeg/png/webp/bmp/tif/tiff/gif, any case; hidden names skipped), sorted by relative
    posix path; key = relative path without extension (with it, if two files would share a key).
    Symlinked folders are followed, each real folder (device, inode) at most once, so a link loop
    (`loop -> .`) or two links to one folder do not repeat images.
    If every image sits exactly one folder deep, `cls` = index of its folder in the sorted folder list.
  * WebDataset shards (`dir/train-{000000..000009}.tar` or one .tar): image under jpg/jpeg/png/webp,
    optional cls. Key = `<shard stem>/<__key__>`, unique even when shards reuse per-shard counters.
    For http(s) shards the first URL is tried up front (`URL_TIMEOUT_S`), so an unreachable server
    is a one-line error at once rather than minutes of download retries.
  * one image file, a glob, or a .txt / .csv list of paths (`litevae_cli.data.lists`).
  * a Hugging Face `datasets` dataset, `hf:NAME_OR_PATH[:SPLIT][#COLUMN]` (`litevae_cli.data.hf_datasets`).
  The sample names win over a folder of that name (use `./sample`). Bad specs raise `DataError`
  (a UserError, so the CLI prints it as one line) with a message naming the path.

`MIN_SIDE` is the smallest image side every registered model encodes and decodes (at 8 px a
GroupNorm sees one value per channel); `check_side` is the one check of a resolution option.
The train and eval loaders built on these live in `litevae_cli.data.loaders`.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from PIL import Image

from litevae_cli.data import hf_datasets, lists
from litevae_cli.data import samples as sample_images
from litevae_cli.errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # GIF: its first frame
SHARD_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
DEFAULT_RESCALE = (0.5, 1.0)
DEFAULT_SHUFFLE_BUFFER = 1000
MULTIPLE = 8  # the encoders' 3-level DWT halves the size three times; the decoders upsample x8
MIN_SIDE = 16  # smallest image side the models take (8 px: the 1x1 latent breaks GroupNorm)
URL_TIMEOUT_S = 15
# The eval crops (`--crop`), by name: what each does (encode-dataset records it, eval prints it).
CROPS = {
    "center": "resize the shorter side to R (PIL bicubic, antialiased), center crop RxR",
    "adm": "ADM center_crop_arr: halve with BOX while short side >= 2R, bicubic to short side R, center crop",
}


class DataError(UserError):
    """A user-facing data problem (bad path, empty source, unreadable file); message is one line."""


@dataclass(frozen=True)
class ImageItem:
    key: str
    source: str
    cls: Optional[int] = None
    class_name: Optional[str] = None


@dataclass
class ImageSource:
    """A resolved `--data` spec. kind: "sample" | "folder" | "dataset" | "shards".
    Map-style kinds fill `items` (ordered); "shards" fills `urls` (expanded, in pattern order)."""

    spec: str
    kind: str
    items: list[ImageItem] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    classes: Optional[list[str]] = None
    notes: list[str] = field(default_factory=list)  # what a command should tell the user (duplicates dropped)

    @property
    def indexable(self) -> bool:
        return self.kind != "shards"

    def __len__(self) -> int:
        if not self.indexable:
            raise TypeError("a shard source has no known length")
        return len(self.items)


# ----------------------------------------------------------------------------- sources
SHARD_EXTS = (".tar", ".tar.gz", ".tgz")


def shard_stem(url: str) -> str:
    return re.sub(r"\.(tar|tar\.gz|tgz)$", "", posixpath.basename(url))


def _folder_source(spec: str, root: str) -> ImageSource:
    rels, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a symlink: a loop or an alias
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        # Real folders before links to them, so a folder is named by its real path when both lead to it.
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")),
                             key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d))
        for fn in filenames:
            if not fn.startswith(".") and fn.lower().endswith(IMAGE_EXTS):
                rels.append(os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/"))
    if not rels:
        raise DataError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTS)}) under directory {spec}")
    rels.sort()
    stems = [posixpath.splitext(r)[0] for r in rels]
    counts = Counter(stems)
    classes = sorted({r.split("/", 1)[0] for r in rels}) if all(r.count("/") == 1 for r in rels) else None
    index = {c: i for i, c in enumerate(classes or [])}
    items = []
    for rel, stem in zip(rels, stems):
        name = rel.split("/", 1)[0] if classes else None
        key = rel if counts[stem] > 1 else stem
        items.append(ImageItem(key, os.path.join(root, *rel.split("/")), index.get(name), name))
    return ImageSource(spec, "folder", items=items, classes=classes)


def resolve_source(spec: str) -> ImageSource:
    """Turn a `--data` spec into an ImageSource (see the module docstring); DataError when unusable."""
    spec = str(spec)
    if spec in sample_images.SPLITS:
        files = sample_images.sample_files(spec)
        if not files:
            raise DataError(f"sample set {spec!r}: no image found in {sample_images.sample_data_dir()}")
        return ImageSource(spec, "sample", items=[ImageItem(f"sample/{n}", p) for n, p in files])
    if hf_datasets.claims(spec):
        rows, classes, notes = _hf(hf_datasets.items, spec)
        return ImageSource(spec, "dataset", items=[ImageItem(*r) for r in rows], classes=classes, notes=notes)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return _folder_source(spec, path)
    named = _named_files(spec, path)
    if named is not None:
        items, notes = lists.keyed_paths(spec, named)
        return ImageSource(spec, "folder", items=[ImageItem(k, p) for k, p in items], notes=notes)
    if "{" in path or path.endswith(SHARD_EXTS):
        import braceexpand

        urls = list(braceexpand.braceexpand(path))
        remote = [u for u in urls if _remote(u)]
        missing = [u for u in urls if u not in remote and not os.path.isfile(u)]
        if len(missing) == len(urls):
            raise DataError(f"shard pattern {spec} matches no file")
        if missing:
            raise DataError(f"shard pattern {spec}: {len(missing)} of {len(urls)} shards missing, e.g. {missing[0]}")
        if remote and remote[0].startswith(("http://", "https://")):
            _check_reachable(remote[0])
        return ImageSource(spec, "shards", urls=urls)
    if not os.path.exists(path):
        raise DataError(f"data path does not exist: {spec}")
    raise DataError(f"{spec} is not an image folder, an image, a glob, a .txt/.csv list of images, a .tar shard "
                    f"pattern or one of {', '.join(sample_images.SPLITS)}")


def _named_files(spec: str, path: str) -> Optional[list[str]]:
    """The files a list, a single image or a glob names (None: the spec is none of these)."""
    try:
        if os.path.isfile(path) and path.lower().endswith(lists.LIST_EXTS):
            return lists.read_list(path)
        if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTS):
            return [path]
        if lists.is_glob(path) and not os.path.exists(path) and not path.endswith(SHARD_EXTS):
            return lists.glob_paths(spec, IMAGE_EXTS)
    except lists.ListError as err:
        raise DataError(str(err)) from None
    return None


def _hf(fn, *args):
    try:
        return fn(*args)
    except hf_datasets.HFError as err:
        raise DataError(str(err)) from None


def _remote(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def _check_reachable(url: str) -> None:
    """DataError unless the server answers for `url` within URL_TIMEOUT_S (any answer but 404/410)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=URL_TIMEOUT_S).close()
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise DataError(f"shard {url}: HTTP {e.code} (not found)") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot reach shard {url}: {reason}") from None


def source_id(spec: str) -> str:
    """The `--data` spec as recorded with outputs: sample names and URLs as given, paths made absolute."""
    spec = str(spec)
    if spec in sample_images.SPLITS or _remote(spec):
        return spec
    if hf_datasets.claims(spec):
        return _hf(hf_datasets.spec_id, spec)
    return os.path.abspath(os.path.expanduser(spec))


def check_crop(crop: str, what: str = "--crop") -> str:
    """`crop` as one of CROPS, else a UserError about `what`."""
    if crop not in CROPS:
        raise UserError(f"{what} must be {' or '.join(CROPS)}, got {crop!r}")
    return crop


def upscale_warning(count: int, resolution: int) -> str:
    """The one line eval, training and encode-dataset print when `count` images were under `resolution` px."""
    return f"warning: {count} image(s) with a short side under {resolution} px were upscaled (bicubic) to {resolution} px"


def check_side(value: int, what: str) -> int:
    """`value` as an image side: a multiple of MULTIPLE and at least MIN_SIDE, else a UserError about `what`."""
    if value % MULTIPLE or value < MIN_SIDE:
        raise UserError(f"{what} must be a multiple of {MULTIPLE} and at least {MIN_SIDE}, got {value}")
    return value


DEFAULT_RESOLUTION = 256  # px, what --resolution means when it is not given


def parse_resolutions(text, default: int = DEFAULT_RESOLUTION) -> list[int]:
    """--resolution: '256,512' -> [256, 512] (None -> [default]); each a side the models take (`check_side`)."""
    if text is None:
        return [default]
    try:
        res = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--resolution must be integers separated by commas, got {text!r}") from None
    if not res:
        raise UserError(f"--resolution: no resolution in {text!r}")
    return list(dict.fromkeys(check_side(r, "--resolution") for r in res))


def parse_resolution(text, default: int = DEFAULT_RESOLUTION) -> int:
    """--resolution of a command that takes one (None -> `default`)."""
    res = parse_resolutions(text, default)
    if len(res) != 1:
        raise UserError(f"--resolution: this command takes one resolution, got {text!r}")
    return res[0]


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


def _open(fp, name: str) -> Image.Image:
    try:
        with Image.open(fp) as im:
            im.load()
            return to_rgb(im)
    except Exception as e:  # noqa: BLE001 - PIL raises many types on bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot read image {name}: {msg}") from None


def load_image(path: str) -> Image.Image:
    """Open one image file as 8-bit RGB PIL; DataError (one line) when missing or unreadable.

    The embedded sample photos are decoded once per process and the same PIL image is returned on
    every later call (callers only crop/resize, which make new images): training draws thousands of
    crops from 7 photos, and decoding the 1411 px retina JPEG for each cost ~6% of a demo step.
    """
    if hf_datasets.is_item(path):
        return decode_image_bytes(_hf(hf_datasets.read_item, path), path)
    if not os.path.isfile(path):
        raise DataError(f"image file not found: {path}")
    if os.path.dirname(os.path.abspath(path)) == _sample_dir():
        return _load_sample_image(path)
    return _open(path, path)


@functools.lru_cache(maxsize=1)
def _sample_dir() -> str:
    return os.path.abspath(sample_images.sample_data_dir())


@functools.lru_cache(maxsize=len(sample_images.SAMPLE_IMAGES))
def _load_sample_image(path: str) -> Image.Image:
    img = _open(path, path)
    img.load()
    return img


def decode_image_bytes(data: bytes, name: str) -> Image.Image:
    return _open(io.BytesIO(data), name)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL -> float [3,H,W] in [-1,1]."""
    a = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    return a.float().div_(127.5).sub_(1.0)


# ----------------------------------------------------------------------------- transforms
def train_transform(img: Image.Image, resolution: int, rng: np.random.Generator,
                    rescale: tuple[float, float] = DEFAULT_RESCALE) -> torch.Tensor:
    """Stochastic rescale, random RxR crop, random h-flip. Draw order: scale, left, top, flip.
    Done as one PIL bicubic resize of just the crop's box (equivalent to rescale-then-crop)."""
    w, h = img.size
    s = max(float(rng.uniform(rescale[0], rescale[1])), resolution / min(w, h))
    rw, rh = max(resolution, round(w * s)), max(resolution, round(h * s))
    left = int(rng.integers(0, rw - resolution + 1))
    top = int(rng.integers(0, rh - resolution + 1))
    sx, sy = rw / w, rh / h
    box = (left / sx, top / sy, min(w, (left + resolution) / sx), min(h, (top + resolution) / sy))
    out = img.resize((resolution, resolution), Image.BICUBIC, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return pil_to_tensor(out)


def eval_transform(img: Image.Image, resolution: int, crop: str = "center"):
    """-> (tensor [3,R,R], crop_box (l,t,r,b) in the resized image, (orig_w, orig_h)).
    center: short side -> R (PIL bicubic, antialiased; long side int() as torchvision Resize), center
    crop (torchvision rounding). adm: guided-diffusion center_crop_arr."""
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
    return pil_to_tensor(img.crop(box)), box, (w0, h0)
