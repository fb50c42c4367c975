"""The latent-shard format written by `litevae encode-dataset`, and the reader for diffusion training.

Format (version 1). DIR holds `latents-%06d.tar` (`latents-r{rank}-%06d.tar` when written by
several torchrun ranks), `stats.json` and `skipped.txt`. Each tar sample (plain WebDataset) has:
  __key__          the source key (relative path without extension, or `<shard stem>/<key>`), with
                   "%" -> "%25" and "." -> "%2E" because WebDataset splits a member name at its first
                   dot; `decode_key` undoes it (the raw key is also in `json["key"]`).
  moments.npy      posterior mean and log-variance (clamped to [-30, 20]) concatenated: [2*nz, h, w].
                   fp16 -> float16, fp32 -> float32; bf16 has no numpy dtype, so it is stored as its
                   uint16 bit pattern (`moments_from_npy` / this reader turn it back into float32).
  moments_flip.npy the same for the horizontally flipped image (only with --flip).
  json             key, source, orig_size [w,h], crop_box [l,t,r,b], resolution, crop, moments_dtype,
                   cls / class_name when known.
  cls              the class index as ASCII text (only when the source has classes).
stats.json: see `litevae_cli.latents.encode` and `litevae_cli.latents.stats`; its factors follow diffusers:
z_model = (z - shift_factor) * scaling_factor. The top-level pair is the posterior mean's;
`normalization.sample` / `normalization.mean` hold both sets, global and per channel. The reader takes
the set that matches its `sample=` setting, so what it yields has std ~1 either way.

Reader example (the README's):

    from torch.utils.data import DataLoader
    from litevae_cli.latents.reader import LatentShards

    ds = LatentShards("latents/", sample=True, flip_prob=0.5, shuffle_buffer=1000, seed=0)
    loader = DataLoader(ds, batch_size=64, num_workers=4)
    for z, meta in loader:  # z: [64, nz, h, w] float32, already (z - shift) * scale, std ~1
        ...                 # meta["cls"]: class indices (-1 when unknown), meta["key"]: source keys
    x = model.decode(ds.unnormalize(z_generated))  # back to the autoencoder's latent space

Shards are split across DataLoader workers and torchrun ranks (by shard, or by sample when there are
fewer shards than consumers), so no sample is read twice per epoch.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from litevae_cli.latents.stats import STATS_NAME, normalization_factors, read_stats_file
from litevae_cli.files.outputs import SKIPPED_NAME  # noqa: F401 - part of the format (see above)
from litevae_cli.runtime import process_rank

FORMAT = "litevae-latents"
FORMAT_VERSION = 1
DTYPES = {"fp16": np.float16, "bf16": np.uint16, "fp32": np.float32}  # bf16: bit pattern in uint16
TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


# ----------------------------------------------------------------------------- format helpers
def shard_pattern(rank: int = 0, world_size: int = 1) -> str:
    """The ShardWriter pattern (a %-format) of one rank's shards."""
    return "latents-%06d.tar" if world_size == 1 else f"latents-r{rank}-%06d.tar"


def shard_regex(rank: int = 0, world_size: int = 1) -> re.Pattern:
    return re.compile(r"latents-\d{6}\.tar" if world_size == 1 else rf"latents-r{rank}-\d{{6}}\.tar")


def encode_key(key: str) -> str:
    """Source key -> WebDataset-safe key (no dots), reversibly."""
    return key.replace("%", "%25").replace(".", "%2E")


def decode_key(key: str) -> str:
    return key.replace("%2E", ".").replace("%25", "%")


def moments_numpy(moments: torch.Tensor, dtype: str) -> np.ndarray:
    """Host moments already in the storage dtype -> the numpy array stored (bf16 -> its uint16 bits)."""
    t = moments.detach().cpu().contiguous()
    return t.view(torch.int16).numpy().view(np.uint16) if dtype == "bf16" else t.numpy()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def moments_from_npy(data: bytes, dtype: str) -> torch.Tensor:
    """.npy bytes -> float32 tensor (bf16 bit patterns decoded)."""
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    if dtype == "bf16" or arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.uint16).view(np.int16)).view(torch.bfloat16).float()
    return torch.from_numpy(arr.astype(np.float32))


def read_stats(directory: str) -> Optional[dict]:
    path = os.path.join(directory, STATS_NAME)
    if not os.path.isfile(path):
        return None
    return read_stats_file(path)  # one line for a file that is no JSON object; factors checked on use


def list_shards(directory: str) -> list[str]:
    """Every latent shard of DIR (all ranks), sorted by name."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), "latents-*.tar")))


# ----------------------------------------------------------------------------- reader
def _factor(value):
    """A float, or a per-channel sequence as a [C, 1, 1] float32 tensor (broadcasts over [C,h,w] and [N,C,h,w])."""
    if isinstance(value, (int, float)):
        return float(value)
    return torch.as_tensor(value, dtype=torch.float32).reshape(-1, 1, 1)


class LatentShards(IterableDataset):
    """Iterate (z [nz,h,w] float32, meta) from encode-dataset shards.

    source:      the output directory, a brace pattern ("dir/latents-{000000..000009}.tar") or a list.
    sample:      draw z ~ N(mean, exp(logvar)) (True) or take the mean (False).
    scale/shift: z_out = (z - shift) * scale (floats, or one per channel); None -> stats.json's factors
                 for sampled latents when sample=True, for the posterior mean when sample=False
                 (stats.json is looked for in the source directory; pass both when there is none).
    per_channel: with scale/shift None, normalise each channel by its own stats.json factors.
    flip_prob:   probability of taking `moments_flip` (needs shards written with --flip).
    shuffle_buffer, seed: an optional sample shuffle buffer and the seed of every random draw.
    meta: key (decoded), cls (-1 when unknown) and, with full_meta=True, the whole json record.
    """

    def __init__(self, source, sample: bool = True, scale=None, shift=None, flip_prob: float = 0.0,
                 shuffle_buffer: int = 0, seed: int = 0, split_by_rank: bool = True, full_meta: bool = False,
                 per_channel: bool = False):
        self.urls, directory = self._resolve(source)
        self.stats = read_stats(directory) if directory else None
        if (scale is None or shift is None) and self.stats is None:
            raise ValueError(f"no {STATS_NAME} next to the shards ({directory}); pass scale= and shift=")
        if scale is None or shift is None:
            stats_scale, stats_shift = normalization_factors(self.stats, sample, per_channel)
            scale, shift = stats_scale if scale is None else scale, stats_shift if shift is None else shift
        self.scale, self.shift = _factor(scale), _factor(shift)
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        if flip_prob > 0 and self.stats is not None and not self.stats.get("flip", False):
            raise ValueError("flip_prob > 0 needs shards written with --flip (stats.json says flip=false)")
        self.sample, self.flip_prob, self.buffer, self.seed = sample, flip_prob, shuffle_buffer, seed
        self.split_by_rank, self.full_meta = split_by_rank, full_meta
        self.epoch = 0

    @staticmethod
    def _resolve(source) -> tuple[list[str], Optional[str]]:
        if isinstance(source, (list, tuple)):
            urls = [str(u) for u in source]
        elif os.path.isdir(str(source)):
            urls = list_shards(str(source))
        else:
            import braceexpand

            urls = list(braceexpand.braceexpand(str(source)))
        if not urls:
            raise ValueError(f"no latent shards (latents-*.tar) in {source}")
        dirs = {os.path.dirname(u) for u in urls}
        return urls, (dirs.pop() if len(dirs) == 1 else None)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws (samples, flips, shuffle) per epoch."""
        self.epoch = epoch

    def unnormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Undo (z - shift) * scale, e.g. before `model.decode` of a generated latent."""
        return z / self.scale + self.shift

    def _consumer(self) -> tuple[int, int]:
        rank, world = process_rank() if self.split_by_rank else (0, 1)
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * nw + wid, world * nw

    def _raw(self, cid: int, consumers: int) -> Iterator[dict]:
        from webdataset.tariterators import tarfile_samples

        by_shard = len(self.urls) >= consumers
        urls = self.urls[cid::consumers] if by_shard else self.urls
        j = 0
        for s in tarfile_samples([dict(url=u) for u in urls]):
            if by_shard or j % consumers == cid:
                yield s
            j += 1

    def _convert(self, s: dict, gen: torch.Generator):
        meta = json.loads(s["json"]) if "json" in s else {}
        dtype = meta.get("moments_dtype") or (self.stats or {}).get("dtype", "fp32")
        use_flip = self.flip_prob > 0 and float(torch.rand((), generator=gen)) < self.flip_prob
        if use_flip and "moments_flip.npy" not in s:
            raise ValueError(f"sample {s['__key__']} has no moments_flip.npy (encode with --flip)")
        m = moments_from_npy(s["moments_flip.npy" if use_flip else "moments.npy"], dtype)
        mean, logvar = m.chunk(2, dim=0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen) if self.sample else mean
        out_meta = {"key": decode_key(s["__key__"]), "cls": int(meta.get("cls", -1))}
        if self.full_meta:
            out_meta["json"] = meta
        return (z - self.shift) * self.scale, out_meta

    def __iter__(self):
        cid, consumers = self._consumer()
        rng = np.random.default_rng([self.seed, self.epoch, cid])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        buf: list = []
        for s in self._raw(cid, consumers):
            item = self._convert(s, gen)
            if self.buffer <= 1:
                yield item
                continue
            buf.append(item)
            if len(buf) >= self.buffer:
                yield buf.pop(int(rng.integers(len(buf))))
        rng.shuffle(buf)
        yield from buf


def iter_moments(urls: Sequence[str]) -> Iterator[tuple[str, torch.Tensor, dict]]:
    """(key, moments float32 [2nz,h,w], json) for every sample, in shard order (tests, inspection)."""
    from webdataset.tariterators import tarfile_samples

    for s in tarfile_samples([dict(url=u) for u in urls]):
        meta = json.loads(s["json"])
        yield decode_key(s["__key__"]), moments_from_npy(s["moments.npy"], meta.get("moments_dtype", "fp32")), meta
