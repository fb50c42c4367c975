"""PNG figures drawn with PIL only (matplotlib is not a dependency): latent histograms and channel grids.

- `histogram_grid`: one panel per latent channel, a density histogram of its values with the N(0, 1)
  density drawn over it (red), so a glance shows how far a channel is from the standard normal prior.
- `latent_grid`: one row per image, the input next to each latent channel shown as a greyscale image
  (nearest-neighbour upsampled), every channel mapped with a fixed range given by the caller.
Pure drawing: callers compute the data; these functions only write the PNG they are given a path for
(atomically, through `files.atomic.save_image`: a failed write is one line).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from litevae_cli.files.atomic import save_image

BG, FG, GRID = (255, 255, 255), (30, 30, 30), (215, 215, 215)
BAR, CURVE = (70, 110, 180), (215, 40, 40)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def histogram_range(values: np.ndarray, floor: float = 4.0) -> float:
    """Symmetric x-range: at least +-floor (to show N(0,1) whole), wide enough for 99.9% of |values|."""
    if values.size == 0:
        return floor
    return float(max(floor, math.ceil(np.quantile(np.abs(values), 0.999))))


def _panel(values: np.ndarray, title: str, size: tuple[int, int], bins: int) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, BG)
    d = ImageDraw.Draw(img)
    font = _font(11)
    left, right, top, bottom = 34, w - 8, 22, h - 20
    lim = histogram_range(values)
    edges = np.linspace(-lim, lim, bins + 1)
    counts, _ = np.histogram(values, bins=edges)
    width = edges[1] - edges[0]
    density = counts / max(values.size, 1) / width
    xs = np.linspace(-lim, lim, 400)
    pdf = normal_pdf(xs)
    ymax = max(float(density.max(initial=0.0)), float(pdf.max())) * 1.08

    def px(x):
        return left + (x + lim) / (2 * lim) * (right - left)

    def py(y):
        return bottom - y / ymax * (bottom - top)

    d.rectangle([left, top, right, bottom], outline=GRID)
    d.line([px(0), top, px(0), bottom], fill=GRID)
    for i, c in enumerate(density):
        if c > 0:
            d.rectangle([px(edges[i]), py(c), max(px(edges[i + 1]) - 1, px(edges[i])), bottom], fill=BAR)
    d.line([(px(x), py(y)) for x, y in zip(xs, pdf)], fill=CURVE, width=2)
    d.text((left, 4), title, fill=FG, font=font)
    for x in (-lim, 0.0, lim):
        label = f"{x:g}"
        d.text((px(x) - 3 * len(label), bottom + 3), label, fill=FG, font=font)
    d.text((2, top - 2), f"{ymax:.2f}", fill=FG, font=font)
    d.text((2, bottom - 10), "0", fill=FG, font=font)
    outside = float(np.mean(np.abs(values) > lim)) if values.size else 0.0
    if outside > 0:
        d.text((right - 70, top + 2), f"{100 * outside:.2f}% out", fill=FG, font=font)
    return img


def histogram_grid(channels: Sequence[np.ndarray], path: str | Path, title: str, bins: int = 60,
                   columns: int = 4, panel: tuple[int, int] = (260, 190)) -> Path:
    """Per-channel density histograms (blue) against the N(0,1) density (red), as one PNG."""
    n = len(channels)
    cols = min(columns, max(n, 1))
    rows = math.ceil(n / cols)
    header = 28
    fig = Image.new("RGB", (cols * panel[0], header + rows * panel[1]), BG)
    ImageDraw.Draw(fig).text((8, 7), f"{title}   (blue: histogram density, red: N(0,1) density)", fill=FG,
                             font=_font(14))
    for c, values in enumerate(channels):
        v = np.asarray(values, dtype=np.float64).ravel()
        t = f"ch {c}: mean {v.mean():.3f}  std {v.std():.3f}" if v.size else f"ch {c}: empty"
        fig.paste(_panel(v, t, panel, bins), ((c % cols) * panel[0], header + (c // cols) * panel[1]))
    return save_image(fig, path, format="PNG")


def latent_grid(rows: Sequence[tuple[str, Optional[np.ndarray], np.ndarray]], path: str | Path, title: str,
                ranges: Sequence[tuple[float, float]], cell: int = 128) -> Path:
    """rows: (label, input image uint8 [H,W,3] or None, latent [C,h,w]); channel c is mapped from
    ranges[c] = (lo, hi) to black..white (clamped), upsampled with nearest neighbours to cell x cell."""
    nch = rows[0][2].shape[0] if rows else 0
    pad, header, label_h = 4, 40, 16
    width = pad + (nch + 1) * (cell + pad)
    height = header + len(rows) * (cell + label_h + pad)
    fig = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(fig)
    font = _font(11)
    d.text((8, 5), title, fill=FG, font=_font(13))
    for c in range(nch):
        d.text((pad + (c + 1) * (cell + pad), header - 15), f"ch {c}", fill=FG, font=font)
    d.text((pad, header - 15), "input", fill=FG, font=font)
    for r, (label, image, latent) in enumerate(rows):
        y = header + r * (cell + label_h + pad)
        if image is not None:
            fig.paste(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((cell, cell), Image.BICUBIC), (pad, y))
        else:
            d.rectangle([pad, y, pad + cell - 1, y + cell - 1], outline=GRID)
            d.text((pad + 8, y + cell // 2 - 6), "(no image)", fill=FG, font=font)
        for c in range(nch):
            lo, hi = ranges[c]
            g = (np.asarray(latent[c], dtype=np.float64) - lo) / max(hi - lo, 1e-12)
            g8 = (np.clip(g, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            fig.paste(Image.fromarray(g8).resize((cell, cell), Image.NEAREST).convert("RGB"),
                      (pad + (c + 1) * (cell + pad), y))
        d.text((pad, y + cell + 2), label[:80], fill=FG, font=font)
    return save_image(fig, path, format="PNG")
