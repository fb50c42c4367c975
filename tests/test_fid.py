"""rFID: streamed statistics, the Fréchet distance against a direct scipy computation, clean-fid's resize,
the TorchScript Inception loader (on a fake TorchScript file) and the missing-file message."""

import numpy as np
import pytest
import scipy.linalg
import torch

from litevae_cli.metrics import fid, weights
from litevae_cli.errors import UserError


def _direct_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) with np.cov (unbiased) and scipy.linalg.sqrtm."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_feature_stats_stream_matches_numpy():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(50, 6)) * 3 + 1
    st = fid.FeatureStats(6)
    for chunk in np.array_split(f, 4):
        st.update(torch.from_numpy(chunk).float())
    mu, cov = st.mean_cov()
    f32 = f.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, f32.mean(0), rtol=1e-10)
    np.testing.assert_allclose(cov, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-9)


def test_rfid_matches_direct_scipy_frechet_distance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 8))
    b = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8)) * 0.5 + 0.3
    def extractor(x):  # the "images" are the features themselves, one per row
        return x.flatten(1).double()

    r = fid.RFID(extractor, dim=8, resize=lambda t: t)
    for i in range(0, 200, 64):
        r.update(torch.from_numpy(a[i:i + 64]), torch.from_numpy(b[i:i + 64]))
    expected = _direct_fid(a, b)
    assert expected > 1.0
    assert r.compute() == pytest.approx(expected, rel=1e-6)


def test_clean_resize_is_clean_fids_resizer():
    from cleanfid.resize import make_resizer

    rng = np.random.default_rng(2)
    imgs = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 40, 56), dtype=np.uint8))
    out = fid.clean_resize(imgs)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    ref = make_resizer("PIL", False, "bicubic", (299, 299))(imgs[1].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(out[1].permute(1, 2, 0).numpy(), ref)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 255.0


def test_rfid_end_to_end_with_a_random_feature_extractor():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten()).eval()

    @torch.no_grad()
    def extractor(x):  # clean-resized [N,3,299,299] in [0,255]
        assert x.shape[-2:] == (299, 299)
        return net((x - 128) / 128)

    real = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    noisy = (real.int() + torch.randint(-40, 41, real.shape)).clamp(0, 255).to(torch.uint8)
    same, diff = fid.RFID(extractor, dim=16), fid.RFID(extractor, dim=16)
    same.update(real, real)
    diff.update(real, noisy)
    assert abs(same.compute()) < 1e-6
    f_real = extractor(fid.clean_resize(real)).double().numpy()
    f_noisy = extractor(fid.clean_resize(noisy)).double().numpy()
    assert diff.compute() == pytest.approx(_direct_fid(f_real, f_noisy), rel=1e-5, abs=1e-8)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_load_inception_runs_the_torchscript_file_it_is_given(tmp_path):
    # A stand-in with the official file's interface: a scripted module whose `layers` map
    # (x - 128) / 128 at 299x299 to [N, 2048, 1, 1].
    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(3, 2048, 1))

        def forward(self, x):
            return self.layers(x)

    fake = Fake().eval()
    torch.jit.save(torch.jit.script(fake), str(tmp_path / "inception-2015-12-05.pt"))
    feats = fid.load_inception(tmp_path / "inception-2015-12-05.pt", torch.device("cpu"))
    x = torch.rand(2, 3, 299, 299) * 255
    out = feats(x)
    assert out.shape == (2, 2048)
    with torch.no_grad():
        torch.testing.assert_close(out, fake.layers((x - 128) / 128).view(2, 2048))
    with pytest.raises(ValueError, match="inception-2015-12-05.pt"):
        fid.load_inception(tmp_path / "other.pt", torch.device("cpu"))


def test_missing_inception_names_file_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "search_dirs", lambda key, weights_dir=None: [tmp_path / "nothing"])
    with pytest.raises(UserError) as err:
        fid.locate_inception(tmp_path / "wdir")
    msg = str(err.value)
    assert "inception-2015-12-05.pt" in msg and "https://nvlabs-fi-cdn.nvidia.com/" in msg
