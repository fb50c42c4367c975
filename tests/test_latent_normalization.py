"""Latent normalisation that matches how latents are used (issue 13), and the README's Python examples.

stats.json holds the factors of posterior means and of sampled latents; `LatentShards` picks the set that
matches `sample=`, so what it yields has std ~1 either way (and per channel with per_channel=True), where
the old default (sampled latents, the mean's factor) gave std 3+. The README's examples run as written in
a folder holding a tiny run (`runs/b12`) and its encoded latents (`latents/in256`).
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from litevae_cli import runtime
from litevae_cli.latents.encode import encode_dataset
from litevae_cli.latents.reader import LatentShards, iter_moments, list_shards, read_stats
from litevae_cli.latents.stats import RunningChannelStats, normalization_factors

ROOT = Path(__file__).resolve().parents[1]
IMAGES, SIDE = 64, 64  # 64 noise images at 64 px: 64 x 4 x 8 x 8 = 16k latent elements (std known to ~1%)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tiny_ckpt, tmp_path_factory):
    """A folder laid out as the README assumes: runs/b12 (a tiny run) and latents/in256 (encoded, --flip)."""
    root = tmp_path_factory.mktemp("readme")
    (root / "runs" / "b12" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_ckpt, root / "runs" / "b12" / "checkpoints" / "last.pt")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(images / f"img{i:02d}.png")
    with runtime.open("cpu", "fp32") as rt:
        encode_dataset(rt, str(root / "runs" / "b12"), str(images), root / "latents" / "in256", resolution=SIDE,
                       batch_size=16, flip=True, dtype="fp32", workers=0, log=lambda *a, **k: None,
                       progress_bar=False)
    return root


def _all(ds, epochs=4) -> torch.Tensor:
    out = []
    for epoch in range(epochs):  # several posterior draws per latent
        ds.set_epoch(epoch)
        out += [z for z, _ in ds]
    return torch.stack(out)


def test_stats_json_has_mean_and_sample_factors(workdir):
    stats = read_stats(str(workdir / "latents" / "in256"))
    moments = torch.stack([m for _, m, _ in iter_moments(list_shards(str(workdir / "latents" / "in256")))]).double()
    mu, sigma2 = moments[:, :4], moments[:, 4:].exp()
    norm = stats["normalization"]
    assert norm["mean"]["scaling_factor"] == pytest.approx(1 / mu.std(unbiased=False).item(), rel=1e-9)
    assert stats["scaling_factor"] == norm["mean"]["scaling_factor"]  # the top-level pair stays the mean's
    want = 1 / (mu.var(unbiased=False) + sigma2.mean()).sqrt().item()  # Var[z] = Var[mu] + E[sigma^2]
    assert norm["sample"]["scaling_factor"] == pytest.approx(want, rel=1e-9)
    assert norm["sample"]["shift_factor"] == norm["mean"]["shift_factor"] == pytest.approx(mu.mean().item())
    per_channel = (mu.var(dim=(0, 2, 3), unbiased=False) + sigma2.mean(dim=(0, 2, 3))).rsqrt()
    assert np.allclose(norm["sample"]["channel_scaling_factor"], per_channel.numpy(), rtol=1e-9)
    assert stats["posterior_std_mean"] == pytest.approx(sigma2.sqrt().mean().item())
    sampled = norm["sample"]
    assert normalization_factors(stats, sample=True) == (sampled["scaling_factor"], sampled["shift_factor"])


@pytest.mark.parametrize("sample", [True, False])
def test_reader_defaults_give_unit_std(workdir, sample):
    src = str(workdir / "latents" / "in256")
    z = _all(LatentShards(src, sample=sample, seed=1), epochs=4 if sample else 1)
    assert abs(z.std().item() - 1) < 0.05 and abs(z.mean().item()) < 0.05
    per = _all(LatentShards(src, sample=sample, seed=1, per_channel=True), epochs=4 if sample else 1)
    assert all(abs(s - 1) < 0.05 for s in per.transpose(0, 1).flatten(1).std(dim=1).tolist())
    if sample:  # what the reader did before: samples scaled by the posterior mean's factor
        stats = read_stats(src)
        old = _all(LatentShards(src, sample=True, seed=1, scale=stats["scaling_factor"], shift=stats["shift_factor"]))
        assert old.std().item() > 1.5


def test_old_stats_json_serves_means_only():
    old = {"scaling_factor": 2.0, "shift_factor": 0.5}
    assert normalization_factors(old, sample=False) == (2.0, 0.5)
    with pytest.raises(ValueError, match="no statistics of sampled latents"):
        normalization_factors(old, sample=True)
    a = RunningChannelStats(2)
    a.update(torch.zeros(1, 2, 2, 2))
    assert "normalization" not in a.to_dict()  # means without log-variances: no sampled statistics claimed


def _readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # num_workers=4, as written
def test_readme_python_examples_run(workdir, monkeypatch, capsys):
    """Every README Python example runs as written, with the full-size registry names swapped for the tiny
    variants (the only change), in a folder holding runs/b12 and latents/in256."""
    blocks = _readme_python_blocks()
    assert len(blocks) >= 3 and all("litevae_cli.load(" in b or "LiteVAE.from_pretrained(" in b for b in blocks)
    monkeypatch.chdir(workdir)
    for block in blocks:
        code = re.sub(r'"litevae-b"', '"litevae-tiny"', block)
        code = re.sub(r'"smc-decoder"', '"smc-decoder-tiny"', code).replace("nz=12", "nz=4")
        scope: dict = {"__name__": "readme_example"}
        exec(compile(code, "README.md", "exec"), scope)
        if "LatentShards(" in block:  # the reader example: std ~1 as written (sampled, flipped half the time)
            assert abs(scope["z"].std().item() - 1) < 0.05 and scope["images"].shape[-1] == SIDE
        if "DiTPipeline(" in block:
            assert scope["image"].size == (256, 256) and scope["vae"].config.scaling_factor != 1.0
            assert abs(scope["latents"].std().item() - 1) < 0.05
    assert (workdir / "litevae-b12-diffusers" / "config.json").is_file()
    assert os.getcwd() == str(workdir)
