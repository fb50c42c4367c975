"""Overlapping tiles with linear-ramp blending: one implementation for every tiled pass.

Used by `reconstruct --tile` (image -> image), and by the diffusers `LiteVAE`'s `enable_tiling()` for
encoding (image -> posterior moments, 1/8 the size) and for decoding latents (latent -> image, 8x).

`tiled_map(fn, x, tile, overlap, scale)` cuts x [N, C, H, W] into tile x tile crops whose starts are
`tile - overlap` apart (the last one flush with the edge), runs `fn` on batches of crops, and blends
the outputs (`scale` times the crop's size) with weights that ramp linearly over the scaled overlap at
every inner tile edge (1 at the borders), normalised by the summed weights. A crop border is where a
tile's output is least like the untiled one (padding, missing context), so it gets the lowest weight
and there are no visible seams. Callers keep tile starts on multiples of 8 so every crop sees the same
Haar DWT grid, and latent tiles the same 8x8-pixel grid, as the whole input.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of `tile` (<= length) overlapping by >= overlap."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_ramp(length: int, start: int, total: int, overlap: int) -> torch.Tensor:
    """1-D blend weight of one tile: linear ramps over `overlap` samples at inner edges, 1 at the borders."""
    i = torch.arange(length, dtype=torch.float32)
    w = torch.ones(length)
    if overlap > 0 and start > 0:
        w = torch.minimum(w, (i + 1) / (overlap + 1))
    if overlap > 0 and start + length < total:
        w = torch.minimum(w, (length - i) / (overlap + 1))
    return w


def _scaled(n: int, scale: Fraction) -> int:
    out = n * scale
    if out.denominator != 1:
        raise ValueError(f"{n} times {scale} is not a whole number: tile, overlap and size must fit the scale")
    return int(out)


def tiled_map(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
              scale: int | Fraction = 1, tile_batch: int = 4) -> tuple[torch.Tensor, int]:
    """fn over blended overlapping tiles of x [N, C, H, W] -> (output [N, C', H*scale, W*scale] in fn's
    dtype and device, tiles per image). fn maps [B, C, t, t] to [B, C', t*scale, t*scale]."""
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile), got overlap {overlap} for tile {tile}")
    scale = Fraction(scale)
    n, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, xx) for y in tile_starts(h, th, overlap) for xx in tile_starts(w, tw, overlap)]
    oh, ow, oth, otw, ov = (_scaled(v, scale) for v in (h, w, th, tw, overlap))
    acc = wsum = out_dtype = None
    for i in range(0, len(boxes), tile_batch):
        chunk = boxes[i:i + tile_batch]
        outs = fn(torch.cat([x[:, :, y:y + th, xx:xx + tw] for y, xx in chunk])).split(n)
        for (y, xx), out in zip(chunk, outs):
            if acc is None:
                out_dtype = out.dtype
                acc = torch.zeros(n, out.shape[1], oh, ow, device=out.device, dtype=torch.float32)
                wsum = torch.zeros(1, 1, oh, ow, device=out.device, dtype=torch.float32)
            oy, ox = _scaled(y, scale), _scaled(xx, scale)
            wt = (blend_ramp(oth, oy, oh, ov)[:, None] * blend_ramp(otw, ox, ow, ov)[None, :]).to(out.device)
            acc[:, :, oy:oy + oth, ox:ox + otw] += out.float() * wt
            wsum[:, :, oy:oy + oth, ox:ox + otw] += wt
    return (acc / wsum).to(out_dtype), len(boxes)
