"""The pixel cap (LITEVAE_MAX_PIXELS): checked on the header before decoding, one line naming the file,
no DecompressionBombWarning, skipped and counted by the train/eval loaders and by reconstruct (--native)."""

import itertools
import warnings

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.data import DataError, load_image, max_pixels
from litevae_cli.data.decode import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
from litevae_cli.data.loaders import make_eval_loader, make_train_loader
from litevae_cli.errors import UserError


def _png(path, w, h):
    Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_cap_default_env_and_message(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(UserError, match="LITEVAE_MAX_PIXELS='lots'"):
        max_pixels()
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    small, mid = _png(tmp_path / "s.png", 30, 30), _png(tmp_path / "m.png", 40, 40)
    big = _png(tmp_path / "b.png", 60, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not leak (1600 px is over 1000)
        assert load_image(small).size == (30, 30) and Image.MAX_IMAGE_PIXELS == 1000
        with pytest.raises(DataError, match=r"m\.png is 40x40 = 0\.0 megapixels, over the 0\.001-megapixel cap"):
            load_image(mid)
        with pytest.raises(DataError, match=r"b\.png has 0\.0 megapixels, over the 0\.001-megapixel cap"):
            load_image(big)  # over twice the cap: PIL's own error, reworded
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")  # no cap
    assert load_image(big).size == (60, 60)


def test_cap_is_checked_on_the_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "cut.png"
    _png(path, 64, 64)
    path.write_bytes(path.read_bytes()[:80])  # header only: decoding would fail
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(DataError, match="over the 0.001-megapixel cap"):
        load_image(str(path))


def test_loaders_skip_over_cap_images(tmp_path, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    _png(d / "a.png", 24, 24), _png(d / "b.png", 32, 32), _png(d / "huge.png", 48, 48)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1500")
    batches = list(itertools.islice(iter(make_train_loader(str(d), 16, 3, seed=0)), 2))
    failed = [f for b in batches for f in b["failed"]]
    assert sum(b["skipped"] for b in batches) == 2 and {k for k, _ in failed} == {"huge"}
    assert "over the 0.0015-megapixel cap" in failed[0][1]
    skipped = [s for b in make_eval_loader(str(d), 16, 4) for s in b["skipped"]]
    assert [k for k, _ in skipped] == ["huge"] and "LITEVAE_MAX_PIXELS" in skipped[0][1]


def test_reconstruct_native_skips_over_cap_image(tiny_ckpt, tmp_path, monkeypatch):
    ok, huge = _png(tmp_path / "ok.png", 24, 24), _png(tmp_path / "huge.png", 48, 48)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1500")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["reconstruct", tiny_ckpt, ok, huge, "--native", "--out", str(out),
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "huge.png is 48x48" in (out / "skipped.txt").read_text() and (out / "ok_recon.png").exists()
    res = CliRunner().invoke(app, ["reconstruct", tiny_ckpt, huge, "--native", "--out", str(tmp_path / "o2"),
                                   "--device", "cpu"])
    assert res.exit_code == 2 and "over the 0.0015-megapixel cap" in res.output
    assert res.output.startswith("error: no image could be read") and "Traceback" not in res.output
