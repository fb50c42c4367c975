"""inspect-latents: streamed moments vs numpy/scipy, the MMD estimator vs a direct numpy computation,
posterior std / KL / factors, valid PNG plots, and the command on a tiny checkpoint and on latent shards."""

import io
import json

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.latents import inspect as il
from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
from litevae_cli.cli import app
from litevae_cli.models import build_autoencoder

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_channel_moments_match_numpy_and_scipy_kurtosis():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_t(5, size=(7, 3, 4, 5)), rng.gamma(2.0, size=(5, 3, 4, 5)) + 3])
    cm = il.ChannelMoments(3)
    for chunk in (x[:1], x[1:6], x[6:]):  # uneven batches exercise the pairwise merge
        cm.update(torch.from_numpy(chunk))
    per = x.transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(cm.mean.numpy(), per.mean(1), rtol=1e-12)
    np.testing.assert_allclose(cm.std.numpy(), per.std(1), rtol=1e-12)
    np.testing.assert_allclose(cm.min.numpy(), per.min(1))
    np.testing.assert_allclose(cm.max.numpy(), per.max(1))
    # Fisher (excess) kurtosis, biased: scipy's defaults.
    np.testing.assert_allclose(cm.kurtosis.numpy(), scipy.stats.kurtosis(per, axis=1, fisher=True, bias=True),
                               rtol=1e-10)


def _mmd2_numpy(x, y, s):
    """Direct double loop over pairs: the unbiased MMD^2 (Gretton et al. 2012, Eq. 3)."""
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * s * s))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_estimator_matches_direct_numpy():
    rng = np.random.default_rng(1)
    d = 2 * 8 * 8  # flattened [2, 8, 8] latents
    x = rng.normal(size=(9, d)) * 1.7 + 0.4
    y = rng.normal(size=(7, d))
    sigmas = (5.0, 25.0, 50.0)
    got = il.gaussian_mmd2_unbiased(torch.from_numpy(x).view(9, 2, 8, 8), torch.from_numpy(y), sigmas)
    for s in sigmas:
        assert got[f"{s:g}"] == pytest.approx(_mmd2_numpy(x, y, s), rel=1e-9, abs=1e-14)
    assert got["sum"] == pytest.approx(sum(got[f"{s:g}"] for s in sigmas))
    assert il.SIGMAS == (25.0, 50.0, 100.0, 250.0, 500.0)


def test_mmd_separates_gaussian_from_shifted():
    g = torch.Generator().manual_seed(3)
    d = 4 * 8 * 8
    same = il.gaussian_mmd2_unbiased(torch.randn(48, d, generator=g), torch.randn(48, d, generator=g))
    off = il.gaussian_mmd2_unbiased(torch.randn(48, d, generator=g) * 2 + 0.5, torch.randn(48, d, generator=g))
    assert abs(same["sum"]) < 0.02 < off["sum"]
    z = torch.zeros(5, 4, 2, 2)
    torch.testing.assert_close(il.standard_normal_like(z, 7), il.standard_normal_like(z, 7))


def test_inspector_report_and_plots(tmp_path):
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(6, 3, 4, 4)) * 2 + 1
    logvar = rng.normal(size=(6, 3, 4, 4)) - 2
    insp = il.LatentInspector(keep=5, examples=2, seed=0)
    for sl in (slice(0, 4), slice(4, 6)):
        images = torch.rand(sl.stop - sl.start, 3, 32, 32) * 2 - 1
        insp.update(il.LatentBatch(torch.from_numpy(mu[sl]), torch.from_numpy(logvar[sl]),
                                   [f"k{i}" for i in range(sl.start, sl.stop)], images))
    rep = insp.report()
    assert rep["images"] == 6 and rep["latent_shape"] == [3, 4, 4]
    assert rep["posterior_std"]["mean"] == pytest.approx(np.exp(0.5 * logvar).mean())
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)
    assert rep["kl_per_element"]["mean"] == pytest.approx(kl.mean())
    np.testing.assert_allclose(rep["kl_per_element"]["per_channel"], kl.mean(axis=(0, 2, 3)))
    assert rep["recommended"]["scaling_factor"] == pytest.approx(1 / mu.std())
    assert rep["recommended"]["shift_factor"] == pytest.approx(mu.mean())
    # Sampled latents z = mu + sigma * eps: Var[z] = Var[mu] + E[sigma^2], the same mean.
    sampled = rep["recommended_for_sampled_latents"]
    assert sampled["scaling_factor"] == pytest.approx(1 / np.sqrt(mu.var() + np.exp(logvar).mean()))
    assert sampled["shift_factor"] == pytest.approx(mu.mean())
    mmd = rep["mmd2_to_standard_normal"]
    assert mmd["samples"] == 5 and mmd["dim"] == 48 and set(mmd["raw"]) == {"25", "50", "100", "250", "500", "sum"}
    kept = torch.from_numpy(mu[:5]).float()
    assert mmd["raw"]["25"] == pytest.approx(
        il.gaussian_mmd2_unbiased(kept, il.standard_normal_like(kept, 0))["25"], rel=1e-9)
    paths = insp.write_plots(tmp_path / "plots", "test")
    assert set(paths) == {"histograms", "histograms_normalised", "channels"}
    for p in paths.values():
        _assert_png(p)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "last.pt"
    return save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(),
                        "model": ae.state_dict(), "ema": None, "step": 3, "config": {}}, path)


def test_cli_inspect_latents_on_images(ckpt, tmp_path):
    out, js = tmp_path / "inspect", tmp_path / "inspect" / "latents.json"
    result = runner.invoke(app, ["inspect-latents", str(ckpt), "--data", "sample-holdout", "--out", str(out),
                                 "--resolution", "32", "--json", str(js), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rep = json.loads(js.read_text())
    assert rep["images"] == 2 and rep["latent_shape"] == [4, 4, 4] and rep["model"]["step"] == 3
    assert len(rep["posterior_mean"]["per_channel"]) == 4 and "raw" in rep["mmd2_to_standard_normal"]
    for name in ("latent_histograms.png", "latent_histograms_normalised.png", "latent_channels.png"):
        _assert_png(out / name)
    assert "scaling_factor" in result.output


def test_cli_inspect_latents_on_shards(tmp_path):
    import webdataset as wds

    from litevae_cli.latents.reader import moments_numpy, npy_bytes  # encode-dataset's format

    rng = np.random.default_rng(4)
    moments = torch.from_numpy(rng.normal(size=(5, 8, 4, 4)).astype(np.float32))
    (tmp_path / "lat").mkdir()
    with wds.TarWriter(str(tmp_path / "lat" / "latents-000000.tar")) as w:
        for i in range(5):
            meta = {"key": f"img{i}", "source": "nowhere", "resolution": 32, "moments_dtype": "fp32"}
            w.write({"__key__": f"img{i}", "moments.npy": npy_bytes(moments_numpy(moments[i], "fp32")),
                     "json": json.dumps(meta).encode()})
    out = tmp_path / "out"
    result = runner.invoke(app, ["inspect-latents", "--latents", str(tmp_path / "lat"), "--out", str(out),
                                 "--json", str(out / "r.json")])
    assert result.exit_code == 0, result.output
    rep = json.loads((out / "r.json").read_text())
    mu = moments[:, :4].double().numpy()
    assert rep["images"] == 5 and rep["latent_shape"] == [4, 4, 4]
    np.testing.assert_allclose([c["mean"] for c in rep["posterior_mean"]["per_channel"]], mu.mean(axis=(0, 2, 3)))
    _assert_png(out / "latent_channels.png")
    both = runner.invoke(app, ["inspect-latents", "x.pt", "--latents", str(tmp_path / "lat"), "--out", str(out)])
    assert both.exit_code != 0 and "not both" in both.output
