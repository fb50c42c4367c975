"""--data beyond folders: one image, a glob, .txt / .csv lists (duplicates used once), every PIL format in a folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.data import DataError, resolve_source

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _img(path: Path, fmt=None, size=24, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def test_every_pil_format_in_a_folder_counts(tmp_path):
    for name, fmt in (("a.png", None), ("b.tif", "TIFF"), ("c.gif", "GIF"), ("d.webp", "WEBP"), ("e.bmp", "BMP"),
                      ("f.TIFF", "TIFF")):
        _img(tmp_path / "f" / name, fmt)
    (tmp_path / "f" / "notes.txt").write_text("not an image\n")
    src = resolve_source(str(tmp_path / "f"))
    assert sorted(it.key for it in src.items) == ["a", "b", "c", "d", "e", "f"]


def test_single_image_glob_and_lists_relative_to_the_list(tmp_path):
    a, b = _img(tmp_path / "x" / "a.png"), _img(tmp_path / "x" / "sub" / "b.jpg", "JPEG", seed=1)
    assert [it.source for it in resolve_source(str(a)).items] == [str(a)]
    assert [it.key for it in resolve_source(str(tmp_path / "x" / "**" / "*.*")).items] == ["a", "sub/b"]
    (tmp_path / "x" / "list.txt").write_text("# two images\na.png\n\nsub/b.jpg\n./a.png\n")
    src = resolve_source(str(tmp_path / "x" / "list.txt"))
    assert [it.source for it in src.items] == [str(a), str(b)]
    assert src.notes == [f"1 duplicate path(s) in {tmp_path / 'x' / 'list.txt'} name a file already listed: each file "
                         "is used once (2 images)"]
    (tmp_path / "x" / "list.csv").write_text("label,path\ncat,sub/b.jpg\ndog,a.png\n")
    assert [it.source for it in resolve_source(str(tmp_path / "x" / "list.csv")).items] == [str(b), str(a)]
    with pytest.raises(DataError, match="no images .* match"):
        resolve_source(str(tmp_path / "x" / "*.jpeg"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="names no image"):
        resolve_source(str(tmp_path / "empty.txt"))


def test_encode_dataset_from_a_csv_list_uses_each_file_once_and_names_missing_ones(tiny_ckpt, tmp_path):
    for i in range(3):
        _img(tmp_path / "imgs" / f"i{i}.png", size=32, seed=i)
    (tmp_path / "imgs" / "list.csv").write_text("path\ni0.png\ni1.png\ni0.png\ngone.png\ni2.png\n")
    res = CliRunner().invoke(app, ["encode-dataset", tiny_ckpt, "--data", str(tmp_path / "imgs" / "list.csv"),
                                   "--out", str(tmp_path / "lat"), "--resolution", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "1 duplicate path(s)" in res.output and "each file is used once (4 images)" in res.output
    assert json.loads((tmp_path / "lat" / "stats.json").read_text())["count"] == 3
    assert "gone.png" in (tmp_path / "lat" / "skipped.txt").read_text()


def test_skips_are_counted_by_image_not_by_read(tiny_preset, make_images, tmp_path, capsys):
    from litevae_cli.training.loop import train

    data = make_images(n=2, broken=2)  # 4 files, 2 unreadable, read again on every pass
    assert train("pretrain", tiny_preset(train={"steps": 6}), str(data), tmp_path / "run",
                 device="cpu") == 0
    out = capsys.readouterr().out
    listed = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert sorted(ln.split("\t")[0] for ln in listed) == ["bad0", "bad1"]
    assert "2 unreadable image(s) skipped (" in out and "failed reads over the passes)" in out, out[-1500:]
