"""The statistics of `make reproduce` and the KL sweep on synthetic data whose answer is known:
the paired bootstrap interval, the verdict rule, the latent MMD and the high-frequency energy."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce"))

from stats import hf_energy, latent_mmd, mmd2, paired_bootstrap, paired_mmd_bootstrap, verdict  # noqa: E402


def synthetic(effect: float, seeds: int = 3, images: int = 20, noise: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    image_level = rng.normal(20, 3, images)  # images differ a lot; the pairing removes that
    variant = image_level + rng.normal(0, noise, (seeds, images))
    return variant + effect + rng.normal(0, 0.2, (seeds, images)), variant


def test_paired_bootstrap_recovers_a_known_difference_and_the_verdict_follows_it():
    for effect, want in ((1.0, "reproduced"), (-1.0, "refuted"), (0.0, "inconclusive")):
        base, variant = synthetic(effect)
        ci = paired_bootstrap(base, variant)
        assert ci["lo"] <= ci["mean"] <= ci["hi"] and (ci["seeds"], ci["images"]) == (3, 20)
        assert abs(ci["mean"] - effect) < 0.4 and ci["lo"] < effect < ci["hi"]
        assert verdict(ci, +1) == want
    # The paper's direction can be "variant better": the same interval then reads the other way.
    assert verdict(paired_bootstrap(*synthetic(-1.0)), -1) == "reproduced"
    # The pairing matters: 3 dB of spread between images does not hide a 1 dB paired effect.
    assert paired_bootstrap(*synthetic(1.0, noise=0.3))["lo"] > 0.5


def test_paired_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    cis = [paired_bootstrap(*synthetic(0.3, seeds=4, images=30, seed=s), n_boot=400, seed=s) for s in range(60)]
    hits = sum(ci["lo"] < 0.3 < ci["hi"] for ci in cis)
    assert 48 <= hits <= 60  # nominal 57 of 60; the two-way bootstrap is slightly conservative or liberal


def test_mmd_is_zero_for_the_same_distribution_and_grows_with_scale():
    rng = np.random.default_rng(0)
    nz = 12
    same = mmd2(rng.standard_normal((400, nz)), rng.standard_normal((400, nz)), [np.sqrt(nz)])[0]
    assert abs(same) < 0.01
    small = rng.standard_normal((40, 64, nz)) * 0.5  # 40 crops x 64 positions, std 0.5
    assert latent_mmd(small)["sum"] > 0.1 > abs(latent_mmd(rng.standard_normal((40, 64, nz)))["sum"])
    # Channel-standardised, a scaled N(0, I) is N(0, I) again.
    assert abs(latent_mmd(small, standardise=True)["sum"]) < 0.05


def test_paired_mmd_bootstrap_says_which_arm_is_closer_to_the_prior():
    rng = np.random.default_rng(1)
    near = [rng.standard_normal((20, 16, 4)) for _ in range(2)]
    far = [rng.standard_normal((20, 16, 4)) * 0.4 + 0.5 for _ in range(2)]
    ci = paired_mmd_bootstrap(near, far, n=256, n_boot=30)
    assert ci["lo"] > 0 and verdict(ci, +1) == "reproduced"
    assert paired_mmd_bootstrap(far, near, n=256, n_boot=30)["hi"] < 0


def test_hf_energy_separates_noise_from_smooth_maps():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((4, 3, 32, 32))
    yy, xx = np.mgrid[:32, :32]
    smooth = np.broadcast_to(np.sin(2 * np.pi * xx / 32) + np.cos(2 * np.pi * yy / 16), (4, 3, 32, 32))
    assert 0.75 < hf_energy(noise) < 0.85 and hf_energy(smooth) < 0.01
