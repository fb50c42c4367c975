"""Reconstruct images through an autoencoder, in overlapping blended tiles when they are large.

Owns `litevae reconstruct`'s work: load the model, prepare each image (`--resolution R`: the eval
transform, shorter side to R then center crop; `--native`: the image as it is, edge-padded to a
multiple of 8 and at least `data.MIN_SIDE` and cropped back), encode to the posterior MEAN and
decode, write `<name>_recon.png` and `<name>_compare.png` (original | reconstruction | error map),
and return PSNR / SSIM per image (from `metrics.image`, on the uint8 images). An unreadable image, a
named FIFO / socket / device / symlink loop ("x.png is a FIFO, not an image file": never opened) and an
image over the pixel cap (`litevae_cli.data.decode.max_pixels`, LITEVAE_MAX_PIXELS, checked on the header
before decoding, `--native` included) are skipped, named in OUT/skipped.txt and the command goes on;
none readable is a one-line error. A path that does not exist at all stops the command at once.

Small images are never changed silently: one warning line per image that `--resolution` upscales, or
that `--native` edge-pads up to `data.MIN_SIDE` for the model. SSIM needs 11 px on each side: for a
smaller image it is None, with the reason in `Reconstruction.ssim_note`, never NaN.

Tiling: an image larger than `tile` on either side is encoded and decoded in overlapping tiles
blended with linear ramps (`litevae_cli.inference.tiling`), so there are no seams and the model's
activation memory is that of `tile_batch` tiles whatever the image size (`--tile 0` turns this off).
Host memory still grows with the image (float copies and the SSIM maps, of the order of 100 bytes per
pixel, estimated from the arrays held): the pixel cap bounds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.data import (MIN_SIDE, MULTIPLE, DataError, parse_resolution, eval_transform, load_image, pil_to_tensor,
                              resolve_source)
from litevae_cli.errors import UserError
from litevae_cli.metrics.image import psnr_uint8, ssim, to_uint8
from litevae_cli.files.atomic import save_image
from litevae_cli.files.outputs import SKIPPED_NAME, SkipLog, check_out_dir, writing
from litevae_cli.runtime import Runtime
from litevae_cli.inference.tiling import tiled_map

DEFAULT_TILE = 512
ERROR_AMPLIFY = 5.0  # the error map shows min(1, 5 * mean |x - x_hat| / 255) on a black-red-yellow-white scale
GAP = 4  # white pixels between the panels of the comparison image
SSIM_MIN_SIZE = 11  # skimage's Gaussian SSIM window (sigma 1.5, truncate 3.5)


@dataclass
class Reconstruction:
    name: str
    source: str
    size: tuple[int, int]  # (w, h) of the compared image
    tiles: int
    psnr: float
    ssim: Optional[float]  # None: not computable (ssim_note says why)
    recon_path: Path
    compare_path: Path
    ssim_note: str = ""


# ----------------------------------------------------------------------------- tiling
def autoencode(model, x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Posterior mean -> decoder, in float32 on the host."""
    with torch.inference_mode(), rt.autocast():
        out = model.decode(model.encode(rt.batch(x)).mode())
    return out.float().cpu()


def reconstruct_tensor(model, x: torch.Tensor, rt: Runtime, tile: Optional[int] = DEFAULT_TILE,
                       overlap: Optional[int] = None, tile_batch: int = 4) -> tuple[torch.Tensor, int]:
    """x [1,3,H,W] in [-1,1] (H, W multiples of 8) -> (reconstruction, number of tiles)."""
    _, _, h, w = x.shape
    if tile is None or (h <= tile and w <= tile):
        return autoencode(model, x, rt), 1
    overlap = tile // 4 if overlap is None else overlap
    return tiled_map(lambda crops: autoencode(model, crops, rt), x, tile, overlap, tile_batch=tile_batch)


def pad_to_multiple(x: torch.Tensor, m: int = MULTIPLE, least: int = MIN_SIDE) -> torch.Tensor:
    """Edge-pad [N,3,H,W] on the right/bottom to multiples of m, at least `least` (cropped off after decoding)."""
    ph, pw = (max(least, n + -n % m) - n for n in x.shape[-2:])
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


# ----------------------------------------------------------------------------- pictures and metrics
def error_map(a_u8: np.ndarray, b_u8: np.ndarray, amplify: float = ERROR_AMPLIFY) -> np.ndarray:
    """HWC uint8 pair -> HWC uint8 heat map (black -> red -> yellow -> white) of the amplified error."""
    v = np.clip(np.abs(a_u8.astype(np.float32) - b_u8.astype(np.float32)).mean(-1) * amplify / 255.0, 0, 1)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1)
    return (rgb * 255).round().astype(np.uint8)


def side_by_side(orig: np.ndarray, recon: np.ndarray, amplify: float = ERROR_AMPLIFY) -> np.ndarray:
    gap = np.full((orig.shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([orig, gap, recon, gap, error_map(orig, recon, amplify)], axis=1)


def image_metrics(orig_u8: torch.Tensor, recon_u8: torch.Tensor) -> tuple[float, Optional[float]]:
    """(PSNR dB, SSIM) of one [3,H,W] uint8 pair; SSIM one channel at a time to bound memory on big images
    (skimage's channel_axis SSIM is the mean of the per-channel values, so this is the same number); SSIM is
    None for an image under SSIM_MIN_SIZE px on a side."""
    a, b = orig_u8[None], recon_u8[None]
    p = float(psnr_uint8(a, b)[0])
    if min(a.shape[-2:]) < SSIM_MIN_SIZE:  # the 11-tap Gaussian window does not fit: no SSIM
        return p, None
    s = [float(ssim(a[:, c:c + 1].double() / 255, b[:, c:c + 1].double() / 255)[0]) for c in range(a.shape[1])]
    return p, float(np.mean(s))


# ----------------------------------------------------------------------------- the command's work
def collect_images(paths: Sequence[str], log: Callable = print) -> list[tuple[str, str]]:
    """(name, file) per image: files as given, directories expanded (recursively, sorted); a file given
    twice (same real path) once, and `log` says how many repeats were dropped."""
    found = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            src = resolve_source(str(path))
            found += [(Path(it.source).stem, it.source) for it in src.items]
            for note in src.notes:  # special files in the folder, named as what they are
                log(note)
        elif os.path.lexists(path):  # a regular file, or a FIFO/device/loop that load_image names and skips
            found.append((path.stem, str(path)))
        else:
            raise DataError(f"image not found: {p}")
    if not found:
        raise DataError("no images given")
    unique, seen = [], set()
    for name, src in found:  # the first occurrence of each real file, in order
        if os.path.realpath(src) not in seen:
            seen.add(os.path.realpath(src))
            unique.append((name, src))
    if len(unique) < len(found):
        log(f"{len(found) - len(unique)} image(s) given twice: each file is reconstructed once")
    found = unique
    names: dict[str, int] = {}
    out = []
    for name, src in found:  # same stem twice (a/x.png, b/x.png): x, x_1
        k = names.get(name, 0)
        names[name] = k + 1
        out.append((name if k == 0 else f"{name}_{k}", src))
    return out


def small_image_warning(name: str, size: tuple[int, int], resolution: Optional[int], log: Callable) -> None:
    """One warning line when an image is upscaled to `resolution`, or (native: None) padded to MIN_SIDE."""
    w, h = size
    if resolution is not None and min(w, h) < resolution:
        log(f"warning: {name} is {w}x{h}: upscaled {resolution / min(w, h):.3g}x (bicubic) to {resolution} px by "
            "--resolution; --native keeps its size")
    elif resolution is None and min(w, h) < MIN_SIDE:
        log(f"warning: {name} is {w}x{h}, under the {MIN_SIDE} px the models take: edge-padded to "
            f"{max(w, MIN_SIDE)}x{max(h, MIN_SIDE)} for the model, the padding cropped off before the metrics")


def prepare(img: Image.Image, resolution: Optional[int]) -> torch.Tensor:
    """PIL -> [1,3,H,W]: the eval transform at `resolution`, or the native image when None."""
    if resolution is None:
        return pil_to_tensor(img)[None]
    return eval_transform(img, resolution, "center")[0][None]


def reconstruct_images(rt: Runtime, model: str, images: Sequence[str], out: str | Path, *,
                       resolution: int | str | None = None, native: bool = False,
                       tile: Optional[int] = DEFAULT_TILE, overlap: Optional[int] = None,
                       amplify: float = ERROR_AMPLIFY, use_ema: bool = True,
                       log: Callable = print) -> list[Reconstruction]:
    """Write a reconstruction and a comparison PNG per image into `out`, on the runtime `rt`: at `resolution`
    (default 256: shorter side resized, center crop) or, with `native`, every image at its own size; `tile`
    0 or None never tiles. Unreadable images are skipped and listed in OUT/skipped.txt (`log` prints the first few)."""
    if native and resolution is not None:
        raise UserError("give either --resolution or --native, not both")
    resolution = None if native else parse_resolution(resolution)
    tile = tile or None
    if tile is not None:
        overlap = tile // 4 if overlap is None else overlap
        if tile % MULTIPLE or overlap % MULTIPLE or not 0 <= overlap < tile or tile < MIN_SIDE:
            raise UserError(f"--tile and --overlap must be multiples of {MULTIPLE} with 0 <= overlap < tile "
                            f"and tile >= {MIN_SIDE} (got {tile}, {overlap})")
    items = collect_images(images, log)
    out = check_out_dir(out)
    loaded = load_autoencoder(model, use_ema=use_ema)
    log(f"model: {loaded.describe()}")
    net = rt.place(loaded.model).eval()
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    results, skips = [], SkipLog(out / SKIPPED_NAME, log)
    for name, src in items:
        try:
            img = load_image(src)
            x = prepare(img, resolution)
        except DataError as err:
            skips.add(src, str(err))
            continue
        h, w = x.shape[-2:]
        small_image_warning(name, img.size, resolution, log)
        rec, n_tiles = reconstruct_tensor(net, pad_to_multiple(x), rt, tile, overlap)
        orig_u8, rec_u8 = to_uint8(x[0]), to_uint8(rec[0, :, :h, :w])
        p, s = image_metrics(orig_u8, rec_u8)
        o_np, r_np = orig_u8.permute(1, 2, 0).numpy(), rec_u8.permute(1, 2, 0).numpy()
        recon_path, compare_path = out / f"{name}_recon.png", out / f"{name}_compare.png"
        save_image(Image.fromarray(r_np), recon_path)  # atomic; a failed write is one line naming the file
        save_image(Image.fromarray(side_by_side(o_np, r_np, amplify)), compare_path)
        note = "" if s is not None else f"{w}x{h} px is under SSIM's {SSIM_MIN_SIZE} px window"
        results.append(Reconstruction(name, src, (w, h), n_tiles, p, s, recon_path, compare_path, note))
    if not results:
        raise DataError(f"no image could be read ({skips.summary()})")
    if skips.count:
        log(skips.summary())
    return results
