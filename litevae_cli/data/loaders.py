"""Train and eval DataLoaders over `litevae_cli.data` sources: samplers, datasets, collation.

Images leave the workers as uint8 [B,3,R,R] (a quarter of float32's bytes through shared memory and
the host-to-device copy); consumers map them to float [-1,1] with `to_model_range` once the batch is on
the device (`make_eval_loader(uint8=False)` keeps float for callers that want it on the host).

Train (`make_train_loader`) -> {"images": uint8 [B,3,R,R], "skipped": int, "failed": [(key, reason)],
"index": LongTensor[B], "upscaled": [key of each image whose short side was under R]}:
  stochastic rescale by s ~ U[rescale] (default [0.5, 1.0]) of the source size, raised so the short
  side is >= R (bicubic, antialiased upscale), then a random RxR crop and a random horizontal flip
  (`litevae_cli.data.transforms`; JPEGs are decoded with libjpeg's draft scaling when the crop is
  downscaled 2x or more, `draft=False` turns that off).
  Folders/sample: an infinite sampler over global indices `epoch*n + perm_epoch[i]`, permutation
  seeded by (seed, epoch); rank r takes stream positions r::world_size; augmentation seeded by
  (seed, global index), so batches do not depend on `workers`. Every batch consumes exactly
  `batch_size` indices (failed images are dropped and counted in `skipped`, so `images` may hold fewer,
  even zero, rows): the training loop resumes with `start_sample = start_sample + batches * batch_size`
  (see `samples_consumed`) and sees exactly the batches an uninterrupted run would. The item list is an
  `ItemTable` (numpy arrays), shared by forked workers rather than copied into each.
  Shards (`litevae_cli.data.shards`): streaming, shards split across (rank, worker) (by sample when
  shards < ranks x workers), shuffle buffer, repeated forever. Resume is APPROXIMATE: shard order,
  buffer and augmentation are re-seeded from (seed, start_sample) rather than fast-forwarded, so a
  resumed run does not replay the batches it already saw but may revisit samples of the interrupted pass.

Eval (`make_eval_loader`) -> {"images": [B,3,R,R], "meta": [dict], "skipped": [(key, reason)]}:
  deterministic; `limit` caps the ordered list, rank r takes items r::world_size, then keys in
  `skip_keys` are dropped. meta = key, source, orig_size [w,h], crop_box [l,t,r,b] (in the resized
  image), plus cls/class_name when known. Shards: each shard read by one (rank, worker) when there are
  enough shards and no limit, else scanned by every worker in order (see `litevae_cli.data.shards`).

Workers (`litevae_cli.data.workers`) use one thread, ignore SIGINT/SIGTERM (the main process stops the
loop), close their copies of output-folder locks, and die with the main process (parent-death signal or
a watchdog). Images over the pixel cap, special files and unreadable files are skipped and counted like
any bad image. `require_readable` stops a command up front when its source holds no image that decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from litevae_cli.data.decode import load_image
from litevae_cli.data.index import ImageItem
from litevae_cli.data.shards import EvalShards, TrainShards, iter_shard, shard_bytes, shard_image, shard_item
from litevae_cli.data.sources import DEFAULT_SHUFFLE_BUFFER, DataError, ImageSource, resolve_source
from litevae_cli.data.transforms import DEFAULT_RESCALE, eval_transform, train_crop_bytes, train_crop_file
from litevae_cli.data.workers import loader_kwargs
from litevae_cli.errors import one_line


# ----------------------------------------------------------------------------- shared helpers
@dataclass(frozen=True)
class _Failed:
    key: str
    reason: str


def _candidates(src: ImageSource):
    """(key, zero-argument loader) of every image of a source, in order."""
    if src.indexable:
        for item in src.items:
            yield item.key, partial(load_image, item.source)
        return
    for url in src.urls:
        for sample in iter_shard(url):
            item, data = shard_item(sample, url)
            yield item.key, partial(shard_image, item, data)


def require_readable(source) -> None:
    """DataError unless the source holds an image that decodes; stops at the first that does (the
    first file, normally), so a command on nothing fails before any work instead of after it."""
    src = source if isinstance(source, ImageSource) else resolve_source(source)
    failed, example = 0, ""
    for key, load in _candidates(src):
        try:
            load()
            return
        except Exception as e:  # noqa: BLE001 - any bad file counts as unreadable
            failed, example = failed + 1, example or f"{key}: {one_line(e)}"
    found = f"{failed} unreadable, e.g. {example}" if failed else "no image in any shard"
    raise DataError(f"no readable image in {src.spec} ({found})")


# ----------------------------------------------------------------------------- train
class InfiniteShardedSampler:
    """Infinite, resumable sampler yielding GLOBAL indices `epoch*n + perm_epoch[i]` (map with % n).
    Rank r yields stream positions p = r, r+W, r+2W, ... starting at its `start_sample`-th one."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, start_sample: int = 0):
        if n <= 0 or not 0 <= rank < world_size or start_sample < 0:
            raise ValueError("bad sampler arguments")
        self.n, self.seed, self.rank, self.world_size, self.start = n, seed, rank, world_size, start_sample

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 0x5A3]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        p = self.rank + self.start * self.world_size
        epoch, perm = -1, None
        while True:
            e, i = divmod(p, self.n)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield e * self.n + int(perm[i])
            p += self.world_size


def samples_consumed(start_sample: int, batches: int, batch_size: int) -> int:
    """The `start_sample` to pass when resuming after `batches` batches of a loader started at
    `start_sample` (every batch consumes exactly batch_size sampler indices, skipped ones included)."""
    return start_sample + batches * batch_size


class _Map(Dataset):
    """Map-style dataset: position i -> fn(items, index[i]) (fn is a picklable partial; `index`, a
    numpy array, defaults to every item in order)."""

    def __init__(self, items, fn, index: Optional[np.ndarray] = None):
        self.items, self.fn, self.index = items, fn, index

    def __len__(self):
        return len(self.items) if self.index is None else len(self.index)

    def __getitem__(self, i: int):
        return self.fn(self.items, i if self.index is None else int(self.index[i]))


def _train_one(resolution, seed, rescale, draft, items, g: int):
    item = items[g % len(items)]
    try:
        rng = np.random.default_rng([seed, g])
        crop, size = train_crop_file(item.source, resolution, rng, rescale, draft)
        return crop, g, _small(item, size, resolution)
    except Exception as e:  # noqa: BLE001 - any bad file is skipped and counted
        return _Failed(item.key, one_line(e))


def _train_shard_one(resolution, rescale, draft, url, sample, rng):
    item, data = shard_item(sample, url)
    try:
        crop, size = train_crop_bytes(shard_bytes(item, data), item.key, resolution, rng, rescale, draft)
        return crop, -1, _small(item, size, resolution)
    except Exception as e:  # noqa: BLE001
        return _Failed(item.key, one_line(e))


def _train_collate(batch, resolution: int = 0):
    ok = [b for b in batch if not isinstance(b, _Failed)]
    failed = [(b.key, b.reason) for b in batch if isinstance(b, _Failed)]
    images = torch.stack([b[0] for b in ok]) if ok else torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
    return {"images": images, "skipped": len(failed), "failed": failed,
            "index": torch.tensor([b[1] for b in ok], dtype=torch.long), "upscaled": [b[2] for b in ok if b[2]]}


def _small(item: ImageItem, size: tuple[int, int], resolution: int) -> Optional[str]:
    """The item's key when its short side is under `resolution` (the crop upscales it), else None."""
    return item.key if min(size) < resolution else None


def make_train_loader(source, resolution: int, batch_size: int, *, workers: int = 0, seed: int = 0,
                      rank: int = 0, world_size: int = 1, start_sample: int = 0,
                      rescale: tuple[float, float] = DEFAULT_RESCALE,
                      shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, draft: bool = True) -> DataLoader:
    """Infinite training loader (see module docstring). `source`: an ImageSource or a spec string.
    `start_sample`: samples THIS rank already consumed. `index` holds global indices (-1 for shards).
    Images are uint8 (`to_model_range` on the device); an all-failed batch has shape [0,3,R,R].
    `draft`: JPEG draft decoding of downscaled crops (see `litevae_cli.data.transforms`)."""
    src = source if isinstance(source, ImageSource) else resolve_source(source)
    if not 0 < rescale[0] <= rescale[1]:
        raise DataError(f"bad rescale range {rescale}")
    kw = loader_kwargs(workers, persistent=True)
    collate = partial(_train_collate, resolution=resolution)
    if src.indexable:
        ds = _Map(src.items, partial(_train_one, resolution, seed, rescale, draft))
        sampler = InfiniteShardedSampler(len(src.items), seed, rank, world_size, start_sample)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=True, collate_fn=collate, **kw)
    ds = TrainShards(src.urls, seed, rank, world_size, start_sample, shuffle_buffer,
                     partial(_train_shard_one, resolution, rescale, draft))
    return DataLoader(ds, batch_size=batch_size, collate_fn=collate, **kw)


# ----------------------------------------------------------------------------- eval
def _eval_one(item: ImageItem, resolution: int, crop: str, uint8: bool, shard: bool = False,
              data: Optional[bytes] = None):
    try:
        img = shard_image(item, data) if shard else load_image(item.source)
        x, box, (w, h) = eval_transform(img, resolution, crop, uint8=uint8)
    except Exception as e:  # noqa: BLE001
        return _Failed(item.key, one_line(e))
    meta = {"key": item.key, "source": item.source, "orig_size": [w, h], "crop_box": list(box)}
    meta.update({k: v for k, v in (("cls", item.cls), ("class_name", item.class_name)) if v is not None})
    return x, meta


def _eval_at(resolution, crop, uint8, items, i: int):
    return _eval_one(items[i], resolution, crop, uint8)


def _eval_shard_one(resolution, crop, uint8, item, data):
    return _eval_one(item, resolution, crop, uint8, True, data)


def _eval_collate(batch, resolution: int = 0, uint8: bool = False):
    ok = [b for b in batch if not isinstance(b, _Failed)]
    empty = torch.empty(0, 3, resolution, resolution, dtype=torch.uint8 if uint8 else torch.float32)
    images = torch.stack([x for x, _ in ok]) if ok else empty
    return {"images": images, "meta": [m for _, m in ok],
            "skipped": [(b.key, b.reason) for b in batch if isinstance(b, _Failed)]}


def _eval_index(items, rank: int, world_size: int, limit: Optional[int], skip_keys) -> np.ndarray:
    """Positions of this rank's items: the first `limit`, every world_size-th from `rank`, minus skip_keys."""
    n = len(items) if limit is None else min(limit, len(items))
    index = np.arange(rank, n, world_size, dtype=np.int64)
    if skip_keys:
        keys = items.key if hasattr(items, "key") else (lambda i: items[i].key)
        index = index[[keys(int(i)) not in skip_keys for i in index]] if len(index) else index
    return index


def make_eval_loader(source, resolution: int, batch_size: int, *, workers: int = 0, crop: str = "center",
                     rank: int = 0, world_size: int = 1, limit: Optional[int] = None,
                     skip_keys=frozenset(), uint8: bool = False) -> DataLoader:
    """Deterministic single-pass loader (see module docstring). `source`: ImageSource or spec string.
    `uint8`: images as uint8 (map with `to_model_range` on the device) instead of float [-1,1]."""
    src = source if isinstance(source, ImageSource) else resolve_source(source)
    if crop not in ("center", "adm"):
        raise DataError(f"unknown crop {crop!r} (choose center or adm)")
    skip_keys = frozenset(skip_keys)
    kw = loader_kwargs(workers, persistent=False)
    collate = partial(_eval_collate, resolution=resolution, uint8=uint8)
    if src.indexable:
        index = _eval_index(src.items, rank, world_size, limit, skip_keys)
        ds = _Map(src.items, partial(_eval_at, resolution, crop, uint8), index)
        return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate, **kw)
    ds = EvalShards(src.urls, batch_size, rank, world_size, limit, skip_keys,
                    partial(_eval_shard_one, resolution, crop, uint8), collate)
    return DataLoader(ds, batch_size=None, **kw)
