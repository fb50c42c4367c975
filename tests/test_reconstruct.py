"""reconstruct: valid PNGs and a metrics table, tiled == untiled (exactly for a local model, within a
tolerance away from the borders for the real tiny model), one-line errors for bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata
from typer.testing import CliRunner

from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
from litevae_cli.cli import app
from litevae_cli.models import build_autoencoder
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.inference.reconstruct import reconstruct_tensor
from litevae_cli.runtime import setup_runtime
from litevae_cli.inference.tiling import tile_starts

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4).eval()


@pytest.fixture(scope="module")
def ckpt(tiny, tmp_path_factory):
    return str(save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": tiny.spec.to_dict(),
                            "model": tiny.state_dict(), "ema": None, "step": 1, "config": {}},
                           tmp_path_factory.mktemp("m") / "tiny.pt"))


class _LocalAE(torch.nn.Module):
    """A pointwise 'autoencoder' (8x8 pixel unshuffle -> nonlinearity -> shuffle): tiling must be exact."""

    def encode(self, x):
        z = F.pixel_unshuffle(x, 8)
        return DiagonalGaussian(torch.cat([z, torch.zeros_like(z)], 1))

    def decode(self, z):
        return torch.tanh(2 * F.pixel_shuffle(z, 8))


def _astronaut(h, w):
    img = torch.from_numpy(skdata.astronaut()[:h, 120:120 + w].copy()).permute(2, 0, 1).float()
    return img[None] / 127.5 - 1


def test_tile_starts_cover_and_align():
    assert tile_starts(64, 64, 16) == [0]
    assert tile_starts(200, 64, 16) == [0, 48, 96, 136]
    for n, t, o in [(200, 64, 16), (136, 64, 32), (520, 512, 128)]:
        s = tile_starts(n, t, o)
        assert s[0] == 0 and s[-1] + t == n and all(b - a <= t - o for a, b in zip(s, s[1:]))


def test_tiling_is_exact_for_a_local_model():
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    x = _astronaut(136, 200)
    full, _ = reconstruct_tensor(_LocalAE(), x, rt, tile=None)
    tiled, n = reconstruct_tensor(_LocalAE(), x, rt, tile=64, overlap=16)
    assert n == 3 * 4 and torch.allclose(full, tiled, atol=1e-6)


def test_tiled_matches_untiled_away_from_borders(tiny):
    """The real (tiny, random) model: GroupNorm statistics differ per tile and conv padding differs at tile
    edges, so agreement is approximate; the blend keeps the interior close to the untiled pass."""
    rt = setup_runtime("cpu", "fp32", init_distributed=False)
    x = _astronaut(128, 160)
    full, _ = reconstruct_tensor(tiny, x, rt, tile=None)
    tiled, n = reconstruct_tensor(tiny, x, rt, tile=64, overlap=32)
    b = 16
    d = (full - tiled)[..., b:-b, b:-b]
    spread = (full - full.mean())[..., b:-b, b:-b]
    assert n == 12 and torch.isfinite(tiled).all()
    assert float(d.abs().mean()) < 0.01 and float(d.norm() / spread.norm()) < 0.25
    # no seam: inside the image, no column-to-column (row-to-row) jump of the tiled result is larger than
    # the largest one of the untiled result (tile edges are at columns 48, 64, 96, 112 and rows 64)
    for dim in (-1, -2):
        jump_t, jump_f = (y.diff(dim=dim).abs().mean(dim=[d for d in range(4) if d != dim % 4]) for y in (tiled, full))
        assert float(jump_t[b:-b].max()) <= 1.5 * float(jump_f[b:-b].max()) + 1e-3


def test_reconstruct_writes_pngs_and_prints_metrics(ckpt, tmp_path):
    a = tmp_path / "in" / "a.png"
    a.parent.mkdir()
    Image.fromarray(skdata.astronaut()[:72, :100]).save(a)
    Image.fromarray(skdata.coffee()[:40, :48]).save(tmp_path / "in" / "b.jpg")
    out = tmp_path / "out"
    res = runner.invoke(app, ["reconstruct", ckpt, str(a), str(tmp_path / "in"), "--out", str(out), "--native",
                              "--tile", "64", "--overlap", "16", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "raw (non-EMA) weights" in res.output and "PSNR" in res.output and "SSIM" in res.output
    assert "1 image(s) given twice: each file is reconstructed once" in res.output  # a.png, and in/ holds it
    assert not (out / "a_1_recon.png").exists() and res.output.count("100x72") == 1
    for name, (w, h) in [("a", (100, 72)), ("b", (48, 40))]:
        rec = Image.open(out / f"{name}_recon.png")
        cmp_ = Image.open(out / f"{name}_compare.png")
        rec.load(), cmp_.load()
        assert rec.format == "PNG" and rec.size == (w, h) and rec.mode == "RGB"
        assert cmp_.size == (3 * w + 8, h)
    res = runner.invoke(app, ["reconstruct", ckpt, str(a), "--out", str(tmp_path / "o2"), "--resolution", "32",
                              "--device", "cpu"])
    assert res.exit_code == 0 and Image.open(tmp_path / "o2" / "a_recon.png").size == (32, 32)


def test_bad_input_is_one_line(ckpt, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.pt").write_bytes(b"junk")
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    cases = [([ckpt, str(tmp_path / "missing.png")], "image not found"),
             ([str(tmp_path / "bad.pt"), str(img)], "is not a checkpoint, export or diffusers folder"),
             ([ckpt, str(tmp_path / "empty")], "no images"),
             ([ckpt, str(img), "--native", "--resolution", "64"], "either --resolution or --native"),
             ([ckpt, str(img), "--tile", "60"], "multiples of 8")]
    for args, needle in cases:
        res = runner.invoke(app, ["reconstruct", *args, "--out", str(tmp_path / "o"), "--device", "cpu"])
        assert res.exit_code == 2 and needle in res.output, (args, res.output)
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_small_images_are_named_when_padded_or_upscaled_and_ssim_is_never_nan(ckpt, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(skdata.astronaut()[:12, :10]).save(folder / "tiny.png")  # 10 x 12 px
    Image.fromarray(skdata.astronaut()[:40, :48]).save(folder / "big.png")
    res = runner.invoke(app, ["reconstruct", ckpt, str(folder), "--out", str(tmp_path / "n"), "--native",
                              "--device", "cpu"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert ("warning: tiny is 10x12, under the 16 px the models take: edge-padded to 16x16 for the model"
            in res.output) and "warning: big" not in res.output
    assert "SSIM not available for tiny: 10x12 px is under SSIM's 11 px window" in res.output
    assert "nan" not in res.output.lower() and "n/a" in res.output and "(1 of 2)" in res.output
    assert Image.open(tmp_path / "n" / "tiny_recon.png").size == (10, 12)
    res = runner.invoke(app, ["reconstruct", ckpt, str(folder), "--out", str(tmp_path / "r"), "--resolution", "32",
                              "--device", "cpu"], env={"COLUMNS": "160"})
    assert res.exit_code == 0 and "warning: tiny is 10x12: upscaled 3.2x (bicubic) to 32 px" in res.output
    assert "warning: big" not in res.output and "n/a" not in res.output, res.output
