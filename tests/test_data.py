"""Tests for the shared data layer (litevae_cli.data and the embedded sample set)."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from litevae_cli import data as D
from litevae_cli.data import loaders as L
from litevae_cli.data import samples as sample_images


def _img(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _save(path, img, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def _bytes(img, fmt="PNG"):
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "imnet"
    _save(root / "n02" / "b.png", _img(40, 30, 1))
    _save(root / "n02" / "a.JPG", _img(50, 40, 2), "JPEG")
    _save(root / "n01" / "z.jpeg", _img(36, 36, 3), "JPEG")
    (root / "n01" / "notes.txt").write_text("not an image")
    (root / "n01" / ".hidden.png").write_bytes(b"junk")
    return root


# ----------------------------------------------------------------------------- sources
def test_sample_set_offline_and_disjoint_splits():
    train = D.resolve_source("sample")
    hold = D.resolve_source("sample-holdout")
    every = D.resolve_source("sample-all")
    tk, hk, ak = ({i.key for i in s.items} for s in (train, hold, every))
    assert len(tk) >= 5 and 2 <= len(hk) <= 3
    assert tk.isdisjoint(hk) and tk | hk == ak
    assert [i.key for i in every.items] == [f"sample/{n}" for n, _, _ in sample_images.SAMPLE_IMAGES]
    for item in every.items:
        img = D.load_image(item.source)
        assert img.mode == "RGB" and min(img.size) >= 256 and item.cls is None


def test_folder_source_classes_sorted_keys(class_folder):
    src = D.resolve_source(str(class_folder))
    assert src.kind == "folder" and src.classes == ["n01", "n02"]
    assert [i.key for i in src.items] == ["n01/z", "n02/a", "n02/b"]
    assert [(i.cls, i.class_name) for i in src.items] == [(0, "n01"), (1, "n02"), (1, "n02")]


def test_folder_source_recursive_without_classes(tmp_path):
    _save(tmp_path / "top.png", _img(20, 20))
    _save(tmp_path / "a" / "b" / "deep.webp", _img(20, 20), "WEBP")
    _save(tmp_path / "a" / "x.BMP", _img(20, 20), "BMP")
    _save(tmp_path / "a" / "x.png", _img(20, 20))  # same stem as x.BMP: keys keep the extension
    src = D.resolve_source(str(tmp_path))
    assert src.classes is None and all(i.cls is None for i in src.items)
    assert [i.key for i in src.items] == ["a/b/deep", "a/x.BMP", "a/x.png", "top"]


def test_errors_are_data_errors(tmp_path):
    with pytest.raises(D.DataError, match="missing_dir"):
        D.resolve_source(str(tmp_path / "missing_dir"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(D.DataError, match="empty"):
        D.resolve_source(str(tmp_path / "empty"))
    with pytest.raises(D.DataError, match="matches no file"):
        D.resolve_source(str(tmp_path / "train-{000000..000003}.tar"))
    with pytest.raises(D.DataError, match="nope.png"):
        D.load_image(str(tmp_path / "nope.png"))
    (tmp_path / "bad.jpg").write_bytes(b"garbage bytes, not a jpeg")
    with pytest.raises(D.DataError, match="bad.jpg") as ei:
        D.load_image(str(tmp_path / "bad.jpg"))
    assert "\n" not in str(ei.value) and isinstance(ei.value, ValueError)


def test_to_rgb_modes():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red -> white
    assert D.to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert D.to_rgb(Image.new("LA", (2, 2), (0, 255))).getpixel((0, 0)) == (0, 0, 0)
    assert D.to_rgb(Image.new("L", (2, 2), 7)).getpixel((1, 1)) == (7, 7, 7)
    i16 = Image.fromarray(np.full((2, 2), 65535, np.uint16))
    assert D.to_rgb(i16).getpixel((0, 0)) == (255, 255, 255)
    assert D.to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("RGB", (2, 2), (10, 20, 30)).convert("P")
    assert D.to_rgb(p).mode == "RGB"
    x = D.pil_to_tensor(Image.new("RGB", (3, 2), (0, 255, 0)))
    assert x.shape == (3, 2, 3) and x[0].eq(-1).all() and x[1].eq(1).all()


# ----------------------------------------------------------------------------- shards
def _write_shards(tmp_path, n_shards=2, per=3, corrupt_key=None):
    import webdataset as wds

    for s in range(n_shards):
        with wds.TarWriter(str(tmp_path / f"train-{s:06d}.tar")) as w:
            for k in range(per):
                key = f"{k:04d}"  # per-shard counter: reused across shards
                bad = key == corrupt_key and s == 0
                payload = b"not an image" if bad else _bytes(_img(40 + k, 32, s * 10 + k))
                w.write({"__key__": key, "png": payload, "cls": str(s * 100 + k).encode()})
    return str(tmp_path / ("train-{000000..%06d}.tar" % (n_shards - 1)))


def test_shard_source_eval_keys_cls_and_corrupt(tmp_path):
    pattern = _write_shards(tmp_path, corrupt_key="0001")
    src = D.resolve_source(pattern)
    assert src.kind == "shards" and len(src.urls) == 2
    batches = list(L.make_eval_loader(src, 32, 2))
    metas = [m for b in batches for m in b["meta"]]
    skipped = [s for b in batches for s in b["skipped"]]
    assert [m["key"] for m in metas] == ["train-000000/0000", "train-000000/0002",
                                         "train-000001/0000", "train-000001/0001", "train-000001/0002"]
    assert [m["cls"] for m in metas] == [0, 2, 100, 101, 102]
    assert metas[0]["source"].endswith("train-000000.tar") and metas[0]["orig_size"] == [40, 32]
    assert [k for k, _ in skipped] == ["train-000000/0001"] and skipped[0][1]
    assert all(b["images"].shape[1:] == (3, 32, 32) for b in batches)
    # rank split, limit and skip_keys on the ordered list; worker processes keep the order
    r1 = list(L.make_eval_loader(src, 32, 1, rank=1, world_size=2, limit=5))  # positions 1 and 3
    assert [s[0] for b in r1 for s in b["skipped"]] == ["train-000000/0001"]
    assert [m["key"] for b in r1 for m in b["meta"]] == ["train-000001/0000"]
    keys = [m["key"] for b in L.make_eval_loader(src, 32, 1, workers=2, skip_keys={"train-000000/0000"})
            for m in b["meta"]]
    # 2 shards >= 1 rank x 2 workers: each worker reads its own shard, so the order is by worker
    assert sorted(keys) == sorted(m["key"] for m in metas)[1:]


def test_shard_source_train_stream(tmp_path):
    pattern = _write_shards(tmp_path, n_shards=2, per=3)
    it = iter(L.make_train_loader(pattern, 24, 4, seed=3, shuffle_buffer=4))
    for _ in range(3):  # more than one pass: the stream repeats
        b = next(it)
        assert b["images"].shape == (4, 3, 24, 24) and b["skipped"] == 0 and b["images"].dtype == torch.uint8
    # 2 ranks x 2 workers = 4 consumers > 2 shards: split by sample, still streams forever
    it = iter(L.make_train_loader(pattern, 24, 2, seed=3, rank=1, world_size=2, workers=2, shuffle_buffer=2))
    assert all(next(it)["images"].shape == (2, 3, 24, 24) for _ in range(4))


# ----------------------------------------------------------------------------- train
def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


def test_train_crops_shape_range_and_worker_invariance():
    a = _take(L.make_train_loader("sample", 48, 3, workers=0, seed=7), 3)
    b = _take(L.make_train_loader("sample", 48, 3, workers=2, seed=7), 3)
    for x, y in zip(a, b):
        assert x["images"].shape == (3, 3, 48, 48) and x["images"].dtype == torch.uint8  # [-1,1] on the device
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["images"], y["images"])
    c = _take(L.make_train_loader("sample", 48, 3, seed=8), 1)
    assert not torch.equal(a[0]["images"], c[0]["images"])


def test_train_resume_matches_uninterrupted(class_folder):
    full = _take(L.make_train_loader(str(class_folder), 16, 2, seed=1), 5)  # crosses epoch boundaries
    k = 2
    resumed = _take(L.make_train_loader(str(class_folder), 16, 2, seed=1,
                                        start_sample=L.samples_consumed(0, k, 2)), 3)
    for x, y in zip(full[k:], resumed):
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["images"], y["images"])


def test_sampler_ranks_disjoint_and_cover():
    n, w = 10, 2
    streams = [list(itertools.islice(L.InfiniteShardedSampler(n, 5, r, w), 15)) for r in range(w)]
    assert set(streams[0]).isdisjoint(streams[1])
    epoch0 = [g for s in streams for g in s if g < n]
    assert sorted(epoch0) == list(range(n))  # every item once per epoch across ranks
    epoch1 = [g for s in streams for g in s if n <= g < 2 * n]
    assert sorted(g % n for g in epoch1) == list(range(n))
    # resuming a rank skips exactly
    assert list(itertools.islice(L.InfiniteShardedSampler(n, 5, 1, w, start_sample=4), 11)) == streams[1][4:]


def test_corrupt_file_skipped_and_counted(class_folder):
    (class_folder / "n01" / "broken.jpg").write_bytes(b"\xff\xd8garbage not a jpeg")
    src = D.resolve_source(str(class_folder))
    assert "n01/broken" in [i.key for i in src.items]
    batches = _take(L.make_train_loader(src, 16, 4, seed=0), 3)  # 12 draws over 4 items: 3 failures
    assert sum(b["skipped"] for b in batches) == 3
    assert sum(b["images"].shape[0] for b in batches) == 9
    ev = list(L.make_eval_loader(src, 16, 3))
    assert [s[0] for b in ev for s in b["skipped"]] == ["n01/broken"]
    assert [m["key"] for b in ev for m in b["meta"]] == ["n01/z", "n02/a", "n02/b"]
    assert ev[0]["meta"][0]["class_name"] == "n01" and ev[0]["meta"][0]["cls"] == 0


# ----------------------------------------------------------------------------- eval transform
def test_eval_transform_center_matches_torchvision():
    from torchvision import transforms as T

    img = _img(333, 250, 4)
    x, box, orig = D.eval_transform(img, 100, "center")
    # short side 250 -> 100, long side int(100*333/250) = 133; left = round(33/2) = 16 (half to even)
    assert orig == (333, 250) and box == (16, 0, 116, 100) and x.shape == (3, 100, 100)
    ref = T.Compose([T.Resize(100, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(100)])(img)
    assert torch.equal(x, D.pil_to_tensor(ref))
    x2, box2, _ = D.eval_transform(_img(120, 300, 5), 64, "center")  # portrait: 64 x int(160) -> top 48
    assert box2 == (0, 48, 64, 112) and x2.shape == (3, 64, 64)


def test_eval_transform_adm_matches_center_crop_arr():
    img = _img(700, 450, 6)
    x, box, orig = D.eval_transform(img, 100, "adm")
    # hand: 450 >= 200 -> BOX halve to 350x225 (225 >= 200) -> 175x112; scale 100/112 -> (156, 100)
    assert box == ((156 - 100) // 2, 0, (156 - 100) // 2 + 100, 100) and orig == (700, 450)
    ref = img.resize((350, 225), Image.BOX).resize((175, 112), Image.BOX)
    ref = ref.resize((round(175 * 100 / 112), 100), Image.BICUBIC)
    arr = np.array(ref)[:, 28:128]
    assert torch.equal(x, D.pil_to_tensor(Image.fromarray(arr)))


def test_sample_photos_are_decoded_once_and_other_files_every_time(tmp_path):
    from PIL import Image

    from litevae_cli.data import load_image
    from litevae_cli.data.samples import sample_files

    path = dict(sample_files("sample"))["retina"]
    assert load_image(path) is load_image(path)
    Image.new("RGB", (20, 20), (10, 20, 30)).save(tmp_path / "a.png")
    first = load_image(str(tmp_path / "a.png"))
    Image.new("RGB", (20, 20), (200, 20, 30)).save(tmp_path / "a.png")  # same path, new content
    assert first is not load_image(str(tmp_path / "a.png"))
    assert load_image(str(tmp_path / "a.png")).getpixel((0, 0)) == (200, 20, 30)
