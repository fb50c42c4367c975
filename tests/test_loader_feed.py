"""A loader that feeds many GPUs: JPEG draft for downscaled train crops, uint8 batches mapped to [-1,1]
where consumed, the item table shared by workers, eval shards read once across ranks x workers, and
workers that die with their parent (real processes, kill -9)."""

import gc
import itertools
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from litevae_cli.data import ImageItem, ItemTable, pil_to_tensor, resolve_source, to_model_range, train_transform
from litevae_cli.data import shards as shard_mod
from litevae_cli.data.decode import load_image_drafted
from litevae_cli.data.loaders import make_eval_loader, make_train_loader
from litevae_cli.data.transforms import _Planner, train_crop_file

ROOT = Path(__file__).resolve().parents[1]


def _photo(w, h, seed=0):
    """A smooth image with some texture (JPEG-like content), uint8 HxWx3."""
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    rng = np.random.default_rng(seed)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in (0, 1, 2)], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- (a) draft
def test_jpeg_draft_decodes_smaller_and_keeps_the_crop(tmp_path):
    path = str(tmp_path / "p.jpg")
    Image.fromarray(_photo(1024, 768)).save(path, quality=92)
    img, size, scale = load_image_drafted(path, lambda s: (200, 150))
    assert size == (1024, 768) and scale == 4 and img.size == (256, 192)  # libjpeg's 1/4 scale
    assert load_image_drafted(path, lambda s: (600, 450))[2] == 1  # under 2x: full decode
    png = str(tmp_path / "p.png")
    Image.fromarray(_photo(256, 192)).save(png)
    assert load_image_drafted(png, lambda s: (64, 48))[2] == 1  # not a JPEG: never drafted
    low = (0.1, 0.3)  # crops downscaled 3-10x: drafted at 1/2 .. 1/8
    for seed in range(4):  # same draws (geometry, flip), pixels within a few levels of the full decode
        assert _Planner(64, np.random.default_rng(seed), low, True)((1024, 768)) is not None  # it does draft
        a, _ = train_crop_file(path, 64, np.random.default_rng(seed), low, draft=True)
        b, _ = train_crop_file(path, 64, np.random.default_rng(seed), low, draft=False)
        assert a.dtype == torch.uint8 and a.shape == (3, 64, 64)
        assert (a.float() - b.float()).abs().mean() < 2.0  # measured 0.3-0.45 levels (max 3)
    # the presets' range [0.5, 1] downscales by under 2x: never drafted, identical pixels
    assert _Planner(64, np.random.default_rng(0), (0.5, 1.0), True)((1024, 768)) is None
    full = train_transform(Image.open(path).convert("RGB"), 64, np.random.default_rng(0))
    assert torch.equal(to_model_range(train_crop_file(path, 64, np.random.default_rng(0), draft=False)[0]), full)


# ----------------------------------------------------------------------------- (b) uint8 batches
def test_uint8_batches_map_to_the_float_range_exactly():
    img = Image.fromarray(_photo(40, 32))
    u8 = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
    x = to_model_range(u8)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[0], pil_to_tensor(img)) and to_model_range(x) is x  # float passes through
    batch = next(iter(make_train_loader("sample", 32, 2, seed=3)))
    assert batch["images"].dtype == torch.uint8
    ev = next(iter(make_eval_loader("sample", 32, 2, uint8=True)))
    ref = next(iter(make_eval_loader("sample", 32, 2)))
    assert ev["images"].dtype == torch.uint8 and torch.equal(to_model_range(ev["images"]), ref["images"])


# ----------------------------------------------------------------------------- (c) shared index
def _objects(obj, depth=3):
    """Python objects reachable from obj (bounded depth), numpy arrays counted as one."""
    seen, frontier = {id(obj)}, [obj]
    for _ in range(depth):
        nxt = []
        for o in frontier:
            if isinstance(o, np.ndarray):
                continue
            for r in gc.get_referents(o):
                if id(r) not in seen and not isinstance(r, type):
                    seen.add(id(r))
                    nxt.append(r)
        frontier = nxt
    return len(seen)


def test_item_table_is_a_few_arrays_not_a_list_of_objects(tmp_path):
    d = tmp_path / "d"
    for i in range(60):
        (d / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / f"c{i % 3}" / f"é{i:03d}.png")
    src = resolve_source(str(d))
    items = src.items
    assert isinstance(items, ItemTable) and len(items) == 60 and src.classes == ["c0", "c1", "c2"]
    assert items[0] == ImageItem("c0/é000", str(d / "c0" / "é000.png"), 0, "c0") and items[-1].cls == 2
    assert all(a.dtype.kind in "iu" for a in items.arrays())  # no object arrays, no str per item
    small = ItemTable.from_items(list(items)[::12])  # 5 items, the same 3 classes
    assert _objects(items) == _objects(small)  # the object count does not grow with the item count
    assert pickle.loads(pickle.dumps(items)) == list(items)


# ----------------------------------------------------------------------------- (d) shards read once
def _shards(root, n=6, per=3):
    root.mkdir()
    for s in range(n):
        with tarfile.open(root / f"s-{s:02d}.tar", "w") as tar:
            for j in range(per):
                p = root / f"{s}_{j}.png"
                Image.fromarray(np.full((20, 20, 3), 10 * s + j, np.uint8)).save(p)
                tar.add(p, arcname=f"{j:04d}.png")
    return str(root / ("s-{00..%02d}.tar" % (n - 1)))


def test_eval_shards_are_opened_once_across_ranks_and_workers(tmp_path, monkeypatch):
    pattern = _shards(tmp_path / "sh")
    log = tmp_path / "opens.txt"
    real = shard_mod.iter_shard

    def counting(url):
        with open(log, "a") as f:  # workers are processes: count in a file
            f.write(url + "\n")
        yield from real(url)

    monkeypatch.setattr(shard_mod, "iter_shard", counting)
    keys = []
    for rank in range(2):  # 2 simulated ranks x 2 workers
        loader = make_eval_loader(pattern, 16, 2, workers=2, rank=rank, world_size=2)
        keys += [m["key"] for b in loader for m in b["meta"]]
    opens = log.read_text().split()
    assert sorted(opens) == sorted(set(opens)) and len(opens) == 6  # each shard opened once in total
    assert sorted(keys) == sorted(f"s-{s:02d}/{j:04d}" for s in range(6) for j in range(3))
    log.unlink()
    limited = [m["key"] for b in make_eval_loader(pattern, 2, 2, workers=2, limit=4) for m in b["meta"]]
    assert limited == ["s-00/0000", "s-00/0001", "s-00/0002", "s-01/0000"]  # a limit keeps the exact order


# ----------------------------------------------------------------------------- 25.8 orphaned workers
SCRIPT = """
import os, sys, time, psutil
sys.path.insert(0, {root!r})
from litevae_cli.data import workers
if os.environ.get("NO_PRCTL"):
    workers.set_parent_death_signal = lambda sig=None: False  # the watchdog path
from litevae_cli.data.loaders import make_train_loader
for batch in make_train_loader("sample", 16, 1, workers=2):
    kids = [p.pid for p in psutil.Process().children()]
    if len(kids) >= 2:
        open({pids!r} + ".tmp", "w").write(" ".join(map(str, kids)))
        os.replace({pids!r} + ".tmp", {pids!r})
    time.sleep(0.05)
"""


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")
@pytest.mark.parametrize("mode", ["prctl", "watchdog"])
def test_workers_die_with_a_killed_parent(tmp_path, mode):
    pids_file = str(tmp_path / "pids")
    env = dict(os.environ, PYTHONPATH=str(ROOT), **({"NO_PRCTL": "1"} if mode == "watchdog" else {}))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT.format(root=str(ROOT), pids=pids_file))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(pids_file):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the loader never started its workers"
            time.sleep(0.1)
        kids = [int(p) for p in Path(pids_file).read_text().split()]
        assert len(kids) == 2 and not any(_gone(k) for k in kids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        end = time.monotonic() + 2.0
        while time.monotonic() < end and not all(_gone(k) for k in kids):
            time.sleep(0.05)
        assert all(_gone(k) for k in kids), f"workers outlived their parent ({mode})"
    finally:
        for k in itertools.chain([proc.pid], *([kids] if "kids" in locals() else [])):
            try:
                os.kill(k, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait()


def test_loader_bench_runs_and_reports(tmp_path):
    out = tmp_path / "loader.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed" / "loader_bench.py"), "--images", "6",
                          "--sizes", "32", "--workers", "0", "--batch", "2", "--batches", "1", "--reps", "1",
                          "--threads", "1", "--rescale-ranges", "0.125:0.5", "--json", str(out)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    doc = json.loads(out.read_text())
    assert doc["decode_only"]["median"] > 0 and {r["draft"] for r in doc["rows"]} == {True, False}
    assert all(r["per_worker"]["median"] > 0 for r in doc["rows"]) and "cpu_flags" in doc["machine"]
    assert next(r for r in doc["rows"] if r["draft"])["drafted"] > 0.9  # s <= 1/2: every crop drafted
    sys.path.insert(0, str(ROOT / "benchmarks" / "speed"))
    from report import loader_section

    assert any("per worker / decode limit" in line for line in loader_section(doc))
