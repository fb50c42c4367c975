"""`litevae eval`: option parsing, the no-work-before-weights contract, the metrics against scikit-image /
lpips / a direct FID on a tiny checkpoint, identical images (PSNR capped, SSIM 1), the table and JSON."""

import json

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

from litevae_cli.metrics import evaluate, weights
from litevae_cli.files.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_atomic
from litevae_cli.cli import app
from litevae_cli.data import parse_resolutions
from litevae_cli.errors import UserError
from litevae_cli.models import build_autoencoder
from litevae_cli.runtime import setup_runtime

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    ema = {k: v.clone() for k, v in ae.state_dict().items()}
    path = tmp_path_factory.mktemp("run") / "checkpoints" / "last.pt"
    return save_atomic({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(),
                        "model": ae.state_dict(), "ema": ema, "step": 42, "config": {}}, path)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No weight file anywhere (not even in /tmp, where clean-fid keeps its Inception)."""
    monkeypatch.setattr(weights, "search_dirs", lambda key, weights_dir=None: [tmp_path / "no-weights"])


@pytest.fixture(scope="module")
def lpips_random():
    return weights.build_lpips("alex", random_backbone=True)


def test_parse_metrics_and_resolutions():
    assert evaluate.parse_metrics("ssim, PSNR,rfid") == ["rfid", "psnr", "ssim"]
    assert parse_resolutions("256,512,256") == [256, 512]
    with pytest.raises(UserError, match="fid2"):
        evaluate.parse_metrics("psnr,fid2")
    with pytest.raises(UserError, match="multiple of 8"):
        parse_resolutions("250")
    assert evaluate.required_weights(["psnr", "ssim"]) == []
    assert evaluate.required_weights(["rfid", "lpips"], "vgg") == ["vgg", "inception"]


def test_rfid_without_inception_stops_before_any_work(ckpt, no_weights, monkeypatch):
    calls = []
    import litevae_cli.files.model_file as model_file
    import litevae_cli.jobs.progress as progress
    import litevae_cli.runtime as runtime

    for mod, name in ((model_file, "load_autoencoder"), (progress, "make_progress"), (runtime, "setup_runtime")):
        monkeypatch.setattr(mod, name, lambda *a, _n=name, **k: calls.append(_n) or pytest.fail(f"{_n} called"))
    result = runner.invoke(app, ["eval", str(ckpt), "--data", "sample-holdout", "--metrics", "rfid,psnr"])
    assert result.exit_code != 0 and calls == []
    err = result.stderr if result.stderr_bytes is not None else result.output
    assert "inception-2015-12-05.pt" in err and "https://nvlabs-fi-cdn.nvidia.com/" in err
    assert "no work was done" in err and "Traceback" not in result.output


def _direct_reference(ckpt, resolution, data="sample-holdout"):
    """uint8 originals and reconstructions computed here, independently of the eval loop."""
    from litevae_cli.files.model_file import load_autoencoder
    from litevae_cli.data.loaders import make_eval_loader

    model = load_autoencoder(ckpt).model
    reals, recons = [], []
    for batch in make_eval_loader(data, resolution, 1):
        x = batch["images"]
        with torch.no_grad():
            rec = model.decode(model.encode(x).mean).clamp(-1, 1)
        reals.append(((x + 1) * 127.5).round().to(torch.uint8))
        recons.append(((rec + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(reals), torch.cat(recons)


def test_eval_metrics_match_skimage_lpips_and_direct_fid(ckpt, no_weights, lpips_random):
    # Real images (the held-out sample photos); rfid and lpips through their injection points.
    torch.manual_seed(0)
    # All 9 photos, 5-d features: a non-singular covariance. (With the 2 held-out photos it is singular, and
    # sqrtm's result, finite or NaN, then hangs on rounding differences between two equal formulas.)
    proj = torch.randn(3 * 4 * 4, 5, dtype=torch.float64)

    def features(x):  # clean-resized [N,3,299,299] -> 5-d
        return torch.nn.functional.adaptive_avg_pool2d(x.double(), 4).flatten(1) @ proj

    lp = lpips_random
    opts = evaluate.EvalOptions(metrics=["rfid", "lpips", "psnr", "ssim"], resolutions=[32], batch_size=2)
    rep = evaluate.run_eval(ckpt, "sample-all", opts, setup_runtime("cpu"), lpips_model=lp, feature_fn=features,
                            feature_dim=5, progress_enabled=False)
    row, = rep["results"]
    real, rec = _direct_reference(ckpt, 32, "sample-all")
    assert row["images"] == 9 and row["skipped"] == 0
    a, b = real.permute(0, 2, 3, 1).numpy(), rec.permute(0, 2, 3, 1).numpy()
    psnr = np.mean([peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)])
    ssim = np.mean([structural_similarity(x / 255.0, y / 255.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0, channel_axis=-1)
                    for x, y in zip(a, b)])
    assert row["psnr"] == pytest.approx(psnr, abs=1e-6)
    assert row["ssim"] == pytest.approx(ssim, abs=1e-4)
    with torch.no_grad():
        lpips_direct = lp(real.float() / 127.5 - 1, rec.float() / 127.5 - 1).mean().item()
    assert row["lpips"] == pytest.approx(lpips_direct, rel=1e-5)
    from cleanfid.fid import fid_from_feats

    from litevae_cli.metrics.fid import clean_resize

    # Compare with clean-fid's own fid_from_feats on the same features (the scipy-direct check with
    # well-conditioned features is in test_fid.py).
    fr, ff = features(clean_resize(real)).numpy(), features(clean_resize(rec)).numpy()
    np.testing.assert_allclose(row["rfid"], fid_from_feats(fr, ff), rtol=1e-6)
    assert rep["model"]["step"] == 42 and rep["model"]["ema"] is True
    assert "net=alex" in rep["protocol"]["lpips"] and "clean" in rep["protocol"]["rfid"]


def test_identical_images_psnr_capped_ssim_one(lpips_random):
    from litevae_cli.metrics.image import PSNR_CAP_DB

    acc = evaluate.MetricAccumulator(["lpips", "psnr", "ssim"], lpips_random)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    acc.update(x, x.clone())
    out = acc.compute()
    assert out["images"] == 3 and out["psnr"] == PSNR_CAP_DB and out["psnr_capped_images"] == 3
    assert out["ssim"] == pytest.approx(1.0, abs=1e-12) and out["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_cli_eval_prints_table_and_writes_json(ckpt, tmp_path, no_weights):
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", str(ckpt), "--data", "sample-holdout", "--metrics", "psnr,ssim",
                                 "--resolution", "16,32", "--json", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and "SSIM" in result.output and "EMA weights" in result.output
    rep = json.loads(out.read_text())
    assert rep["metrics"] == ["psnr", "ssim"] and rep["model"]["name"].startswith("litevae-tiny")
    assert rep["model"]["step"] == 42 and rep["model"]["ema"] is True
    assert [(r["resolution"], r["images"]) for r in rep["results"]] == [(16, 2), (32, 2)]
    assert {"crop", "reconstruction", "psnr", "ssim"} <= set(rep["protocol"]) and "rfid" not in rep["protocol"]
    assert all(0 < r["psnr"] < 100 and -1 <= r["ssim"] <= 1 for r in rep["results"])
    raw = runner.invoke(app, ["eval", str(ckpt), "--data", "sample-holdout", "--metrics", "psnr",
                              "--resolution", "16", "--no-ema", "--limit", "1"])
    assert raw.exit_code == 0 and "raw (non-EMA) weights" in raw.output
