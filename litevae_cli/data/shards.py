"""WebDataset shard reading for the loaders: samples of a shard, and the train / eval shard datasets.

Consumers are (rank, worker) pairs, `cid = rank * workers + worker` of `world_size * workers`.
Train (`TrainShards`): shards split across consumers (by sample when shards < consumers), shuffle buffer,
repeated forever (see `litevae_cli.data.loaders`). Eval (`EvalShards`), one pass: with at least as many
shards as consumers and no `limit`, consumer c reads shards c, c + C, ... only, so each shard is opened
once in total across ranks x workers (8 GPUs x 4 workers used to read the data 32 times); the order of
images is then by consumer, not the pattern's. With fewer shards, or a `limit` (which caps the ordered
list), every worker scans the shards in order and keeps its rank's samples (j % world_size) in blocks of
batch_size (block b to worker b % workers), so the order stays exact.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

import numpy as np
from PIL import Image
from torch.utils.data import IterableDataset

from litevae_cli.data.decode import DataError, decode_image_bytes
from litevae_cli.data.index import ImageItem
from litevae_cli.data.sources import SHARD_IMAGE_EXTS, shard_stem
from litevae_cli.data.workers import consumer
from litevae_cli.errors import one_line


def iter_shard(url: str) -> Iterator[dict]:
    """Samples of one tar shard (webdataset grouping); a broken shard ends with a warning. The one
    place a shard is opened (tests count calls)."""
    import warnings

    from webdataset.tariterators import tarfile_samples

    def handler(exn):
        warnings.warn(f"shard {url}: {one_line(exn)}")
        return False

    yield from tarfile_samples([dict(url=url)], handler=handler)


def shard_item(sample: dict, url: str):
    """-> (ImageItem, image bytes or None)."""
    key = f"{shard_stem(url)}/{sample['__key__']}"
    data = next((sample[e] for e in SHARD_IMAGE_EXTS if e in sample), None)
    raw = next((sample[k] for k in ("cls", "cls.txt", "class", "label") if k in sample), b"")
    text = bytes(raw).decode("utf-8", "replace").strip()
    return ImageItem(key, url, int(text) if re.fullmatch(r"-?\d+", text) else None), data


def shard_bytes(item: ImageItem, data: Optional[bytes]) -> bytes:
    if data is None:
        raise DataError(f"{item.key}: no {'/'.join(SHARD_IMAGE_EXTS)} entry")
    return data


def shard_image(item: ImageItem, data: Optional[bytes]) -> Image.Image:
    return decode_image_bytes(shard_bytes(item, data), item.key)


class TrainShards(IterableDataset):
    """Infinite shuffled stream of `make(url, sample, rng)` over this consumer's part of the shards."""

    def __init__(self, urls, seed, rank, world_size, start_sample, buffer, make):
        self.urls, self.seed, self.rank, self.world_size = urls, seed, rank, world_size
        self.start, self.buffer, self.make = start_sample, buffer, make

    def _samples(self, cid: int, consumers: int, epoch: int):
        perm = np.random.default_rng([self.seed, self.start, epoch]).permutation(len(self.urls))
        order = [self.urls[i] for i in perm]
        split = len(order) >= consumers  # enough shards: split shards, else split samples
        j = 0
        for url in order[cid::consumers] if split else order:
            for s in iter_shard(url):
                if split or j % consumers == cid:
                    yield url, s
                j += 1

    def __iter__(self):
        wid, nw = consumer()
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
                    yield self.make(url, s, np.random.default_rng([self.seed, self.start, cid, count]))
                    count += 1
            if got == 0 and consumers == 1:
                raise DataError(f"no samples in shards {self.urls[0]} ... ({len(self.urls)} shards)")
            if got == 0:  # fewer samples than (ranks x workers): this consumer reads them all
                cid, consumers = 0, 1
                continue
            target, epoch = min(target, got), epoch + 1


class EvalShards(IterableDataset):
    """Yields whole batches `collate([one(item, data) ...])` of this consumer's samples (see module docstring)."""

    def __init__(self, urls, batch_size, rank, world_size, limit, skip_keys, one, collate):
        self.urls, self.bs, self.rank, self.world_size = urls, batch_size, rank, world_size
        self.limit, self.skip, self.one, self.collate = limit, skip_keys, one, collate

    def _ordered(self, wid: int, nw: int):
        """Every worker scans every shard; this rank's samples, block b of batch_size to worker b % nw."""
        j = n = 0
        for url in self.urls:
            for s in iter_shard(url):
                if self.limit is not None and j >= self.limit:
                    return
                if j % self.world_size == self.rank:
                    item, data = shard_item(s, url)
                    if item.key not in self.skip:
                        if n // self.bs % nw == wid:
                            yield item, data
                        n += 1
                j += 1

    def _split(self, cid: int, consumers: int):
        """Shards cid, cid + consumers, ...: each shard read by one consumer only."""
        for url in self.urls[cid::consumers]:
            for s in iter_shard(url):
                item, data = shard_item(s, url)
                if item.key not in self.skip:
                    yield item, data

    def __iter__(self):
        wid, nw = consumer()
        consumers = self.world_size * nw
        split = self.limit is None and len(self.urls) >= consumers
        stream = self._split(self.rank * nw + wid, consumers) if split else self._ordered(wid, nw)
        block = []
        for item, data in stream:
            block.append(self.one(item, data))
            if len(block) == self.bs:
                yield self.collate(block)
                block = []
        if block:
            yield self.collate(block)
