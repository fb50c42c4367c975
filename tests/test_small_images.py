"""Images under the resolution: training, eval and encode-dataset say once, with a count, that they were upscaled."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WARN = "image(s) with a short side under {r} px were upscaled (bicubic) to {r} px"


@pytest.fixture
def mixed(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for name, (w, h) in {"big": (40, 40), "small": (20, 24), "tiny": (12, 20)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{name}.png")
    return tmp_path / "imgs"


def test_training_eval_and_encode_dataset_count_upscaled_images(mixed, tiny_preset, tiny_ckpt, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["pretrain", "--preset", tiny_preset(train={"steps": 3}), "--data", str(mixed),
                              "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert res.output.count("upscaled") == 1 and "2 " + WARN.format(r=32) in res.output, res.output
    res = runner.invoke(app, ["eval", tiny_ckpt, "--data", str(mixed), "--metrics", "psnr", "--resolution", "16,32",
                              "--json", str(tmp_path / "e.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "@16: warning: 1 " + WARN.format(r=16) in res.output and "@32: warning: 2 " + WARN.format(r=32) in res.output
    assert [r["upscaled"] for r in json.loads((tmp_path / "e.json").read_text())["results"]] == [1, 2]
    res = runner.invoke(app, ["encode-dataset", tiny_ckpt, "--data", str(mixed), "--out", str(tmp_path / "lat"),
                              "--resolution", "16", "--workers", "0", "--device", "cpu"])
    assert res.exit_code == 0 and res.output.count("upscaled") == 1 and "1 " + WARN.format(r=16) in res.output, res.output
