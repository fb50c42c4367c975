"""Train and eval DataLoaders over `litevae_cli.data` sources: samplers, datasets, collation.

Train (`make_train_loader`) -> {"images": [B,3,R,R], "skipped": int, "failed": [(key, reason)],
"index": LongTensor[B], "upscaled": [key of each image whose short side was under R]}:
  stochastic rescale by s ~ U[rescale] (default [0.5, 1.0]) of the source size, raised so the short
  side is >= R (bicubic, antialiased upscale), then a random RxR crop and a random horizontal flip.
  Folders/sample: an infinite sampler over global indices `epoch*n + perm_epoch[i]`, permutation
  seeded by (seed, epoch); rank r takes stream positions r::world_size; augmentation seeded by
  (seed, global index), so batches do not depend on `workers`. Every batch consumes exactly
  `batch_size` indices (failed images are dropped and counted in `skipped`, so `images` may hold fewer,
  even zero, rows): the training loop resumes with `start_sample = start_sample + batches * batch_size`
  (see `samples_consumed`) and sees exactly the batches an uninterrupted run would.
  Shards: streaming, shards split across (rank, worker) (by sample when shards < ranks x workers),
  shuffle buffer, repeated forever. Resume is APPROXIMATE: shard order, buffer and augmentation are
  re-seeded from (seed, start_sample) rather than fast-forwarded, so a resumed run does not replay
  the batches it already saw but may revisit samples of the interrupted pass.

Eval (`make_eval_loader`) -> {"images": [B,3,R,R], "meta": [dict], "skipped": [(key, reason)]}:
  deterministic order; `limit` caps the ordered list, rank r takes items r::world_size, then keys in
  `skip_keys` are dropped. meta = key, source, orig_size [w,h], crop_box [l,t,r,b] (in the resized
  image), plus cls/class_name when known. Shards with workers > 0: every worker scans all shards
  (decoding only its own blocks of batch_size), so the order stays exact.

Workers ignore SIGINT/SIGTERM (`litevae_cli.jobs.stopping`: the main process stops the loop) and close
their copies of output-folder locks (so a lock dies with the main process). `require_readable`
stops a command up front when its source holds no image that decodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from litevae_cli.data.sources import (DEFAULT_RESCALE, DEFAULT_SHUFFLE_BUFFER, SHARD_IMAGE_EXTS, DataError, ImageItem,
                              ImageSource, decode_image_bytes, eval_transform, load_image, resolve_source,
                              shard_stem, train_transform)
from litevae_cli.errors import one_line
from litevae_cli.files.outputs import release_inherited_locks
from litevae_cli.jobs.stopping import ignore_stop_signals


# ----------------------------------------------------------------------------- shared helpers
@dataclass(frozen=True)
class _Failed:
    key: str
    reason: str


def _worker_init(_):
    torch.set_num_threads(1)
    ignore_stop_signals()
    release_inherited_locks()


def _loader_kwargs(workers: int, persistent: bool) -> dict:
    kw = dict(num_workers=workers, pin_memory=torch.cuda.is_available())
    if workers > 0:
        kw.update(persistent_workers=persistent, prefetch_factor=2, worker_init_fn=_worker_init)
    return kw


def _consumer() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def _iter_shard(url: str) -> Iterator[dict]:
    """Samples of one tar shard (webdataset grouping); a broken shard ends with a warning."""
    import warnings

    from webdataset.tariterators import tarfile_samples

    def handler(exn):
        warnings.warn(f"shard {url}: {one_line(exn)}")
        return False

    yield from tarfile_samples([dict(url=url)], handler=handler)


def _shard_item(sample: dict, url: str):
    """-> (ImageItem, image bytes or None)."""
    key = f"{shard_stem(url)}/{sample['__key__']}"
    data = next((sample[e] for e in SHARD_IMAGE_EXTS if e in sample), None)
    raw = next((sample[k] for k in ("cls", "cls.txt", "class", "label") if k in sample), b"")
    text = bytes(raw).decode("utf-8", "replace").strip()
    return ImageItem(key, url, int(text) if re.fullmatch(r"-?\d+", text) else None), data


def _candidates(src: ImageSource):
    """(key, zero-argument loader) of every image of a source, in order."""
    if src.indexable:
        for item in src.items:
            yield item.key, partial(load_image, item.source)
        return
    for url in src.urls:
        for sample in _iter_shard(url):
            item, data = _shard_item(sample, url)
            yield item.key, partial(_shard_image, item, data)


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
    """Map-style dataset: item i -> fn(items, i) (fn is a picklable partial)."""

    def __init__(self, items, fn):
        self.items, self.fn = items, fn

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int):
        return self.fn(self.items, i)


def _train_one(resolution, seed, rescale, items, g: int):
    item = items[g % len(items)]
    try:
        img = load_image(item.source)
        return train_transform(img, resolution, np.random.default_rng([seed, g]), rescale), g, _small(item, img, resolution)
    except Exception as e:  # noqa: BLE001 - any bad file is skipped and counted
        return _Failed(item.key, one_line(e))


class _TrainShards(IterableDataset):
    def __init__(self, urls, resolution, seed, rescale, rank, world_size, start_sample, buffer):
        self.urls, self.resolution, self.seed, self.rescale = urls, resolution, seed, rescale
        self.rank, self.world_size, self.start, self.buffer = rank, world_size, start_sample, buffer

    def _samples(self, cid: int, consumers: int, epoch: int):
        perm = np.random.default_rng([self.seed, self.start, epoch]).permutation(len(self.urls))
        order = [self.urls[i] for i in perm]
        split = len(order) >= consumers  # enough shards: split shards, else split samples
        j = 0
        for url in order[cid::consumers] if split else order:
            for s in _iter_shard(url):
                if split or j % consumers == cid:
                    yield url, s
                j += 1

    def __iter__(self):
        wid, nw = _consumer()
        cid, consumers = self.rank * nw + wid, self.world_size * nw
        rng = np.random.default_rng([self.seed, self.start, cid, 0xB0F])
        buf, count, epoch, target = [], 0, 0, max(1, self.buffer)
        while True:
            got = 0
            for sample in self._samples(cid, consumers, epoch):
                got += 1
                buf.append(sample)
                while len(buf) >= target:  # target shrinks to one pass's size for tiny data
                    url, s = buf.pop(int(rng.integers(len(buf))))
                    yield self._make(url, s, np.random.default_rng([self.seed, self.start, cid, count]))
                    count += 1
            if got == 0 and consumers == 1:
                raise DataError(f"no samples in shards {self.urls[0]} ... ({len(self.urls)} shards)")
            if got == 0:  # fewer samples than (ranks x workers): this consumer reads them all
                cid, consumers = 0, 1
                continue
            target, epoch = min(target, got), epoch + 1

    def _make(self, url, sample, rng):
        item, data = _shard_item(sample, url)
        try:
            img = _shard_image(item, data)
            return train_transform(img, self.resolution, rng, self.rescale), -1, _small(item, img, self.resolution)
        except Exception as e:  # noqa: BLE001
            return _Failed(item.key, one_line(e))


def _train_collate(batch, resolution: int = 0):
    ok = [b for b in batch if not isinstance(b, _Failed)]
    failed = [(b.key, b.reason) for b in batch if isinstance(b, _Failed)]
    images = torch.stack([b[0] for b in ok]) if ok else torch.empty(0, 3, resolution, resolution)
    return {"images": images, "skipped": len(failed), "failed": failed,
            "index": torch.tensor([b[1] for b in ok], dtype=torch.long), "upscaled": [b[2] for b in ok if b[2]]}


def _small(item: ImageItem, img: Image.Image, resolution: int) -> Optional[str]:
    """The item's key when its short side is under `resolution` (the crop upscales it), else None."""
    return item.key if min(img.size) < resolution else None


def make_train_loader(source, resolution: int, batch_size: int, *, workers: int = 0, seed: int = 0,
                      rank: int = 0, world_size: int = 1, start_sample: int = 0,
                      rescale: tuple[float, float] = DEFAULT_RESCALE,
                      shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> DataLoader:
    """Infinite training loader (see module docstring). `source`: an ImageSource or a spec string.
    `start_sample`: samples THIS rank already consumed. `index` holds global indices (-1 for shards).
    An all-failed batch has images of shape [0,3,R,R]."""
    src = source if isinstance(source, ImageSource) else resolve_source(source)
    if not 0 < rescale[0] <= rescale[1]:
        raise DataError(f"bad rescale range {rescale}")
    kw = _loader_kwargs(workers, persistent=True)
    collate = partial(_train_collate, resolution=resolution)
    if src.indexable:
        ds = _Map(src.items, partial(_train_one, resolution, seed, rescale))
        sampler = InfiniteShardedSampler(len(src.items), seed, rank, world_size, start_sample)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=True, collate_fn=collate, **kw)
    ds = _TrainShards(src.urls, resolution, seed, rescale, rank, world_size, start_sample, shuffle_buffer)
    return DataLoader(ds, batch_size=batch_size, collate_fn=collate, **kw)


# ----------------------------------------------------------------------------- eval
def _shard_image(item: ImageItem, data: Optional[bytes]) -> Image.Image:
    if data is None:
        raise DataError(f"{item.key}: no {'/'.join(SHARD_IMAGE_EXTS)} entry")
    return decode_image_bytes(data, item.key)


def _eval_one(item: ImageItem, resolution: int, crop: str, shard: bool = False, data: Optional[bytes] = None):
    try:
        img = _shard_image(item, data) if shard else load_image(item.source)
        x, box, (w, h) = eval_transform(img, resolution, crop)
    except Exception as e:  # noqa: BLE001
        return _Failed(item.key, one_line(e))
    meta = {"key": item.key, "source": item.source, "orig_size": [w, h], "crop_box": list(box)}
    meta.update({k: v for k, v in (("cls", item.cls), ("class_name", item.class_name)) if v is not None})
    return x, meta


def _eval_at(resolution, crop, items, i: int):
    return _eval_one(items[i], resolution, crop)


def _eval_collate(batch, resolution: int = 0):
    ok = [b for b in batch if not isinstance(b, _Failed)]
    images = torch.stack([x for x, _ in ok]) if ok else torch.empty(0, 3, resolution, resolution)
    return {"images": images, "meta": [m for _, m in ok],
            "skipped": [(b.key, b.reason) for b in batch if isinstance(b, _Failed)]}


class _EvalShards(IterableDataset):
    """Yields whole batches; this rank's list is cut in blocks of batch_size and block b goes to
    worker b % num_workers, so the DataLoader's round-robin returns them in order."""

    def __init__(self, urls, resolution, crop, batch_size, rank, world_size, limit, skip_keys):
        self.urls, self.resolution, self.crop, self.bs = urls, resolution, crop, batch_size
        self.rank, self.world_size, self.limit, self.skip = rank, world_size, limit, skip_keys

    def _mine(self):
        j = 0
        for url in self.urls:
            for s in _iter_shard(url):
                if self.limit is not None and j >= self.limit:
                    return
                if j % self.world_size == self.rank:
                    item, data = _shard_item(s, url)
                    if item.key not in self.skip:
                        yield item, data
                j += 1

    def __iter__(self):
        wid, nw = _consumer()
        block, n = [], 0
        for item, data in self._mine():
            if n // self.bs % nw == wid:
                block.append(_eval_one(item, self.resolution, self.crop, True, data))
                if len(block) == self.bs:
                    yield _eval_collate(block, self.resolution)
                    block = []
            n += 1
        if block:
            yield _eval_collate(block, self.resolution)


def make_eval_loader(source, resolution: int, batch_size: int, *, workers: int = 0, crop: str = "center",
                     rank: int = 0, world_size: int = 1, limit: Optional[int] = None,
                     skip_keys=frozenset()) -> DataLoader:
    """Deterministic single-pass loader (see module docstring). `source`: ImageSource or spec string."""
    src = source if isinstance(source, ImageSource) else resolve_source(source)
    if crop not in ("center", "adm"):
        raise DataError(f"unknown crop {crop!r} (choose center or adm)")
    skip_keys = frozenset(skip_keys)
    kw = _loader_kwargs(workers, persistent=False)
    if src.indexable:
        items = src.items[:limit] if limit is not None else src.items
        items = [it for it in items[rank::world_size] if it.key not in skip_keys]
        ds = _Map(items, partial(_eval_at, resolution, crop))
        return DataLoader(ds, batch_size=batch_size, shuffle=False,
                          collate_fn=partial(_eval_collate, resolution=resolution), **kw)
    ds = _EvalShards(src.urls, resolution, crop, batch_size, rank, world_size, limit, skip_keys)
    return DataLoader(ds, batch_size=None, **kw)
