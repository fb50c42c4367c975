"""The statistics behind every verdict of `make reproduce` and the KL sweep (numpy only, fixed RNG).

- `paired_bootstrap`: per-image paired differences d[seed, image] = base - variant (same image, same seed,
  same initialisation and data order), their mean and a 95% percentile-bootstrap interval that resamples
  seeds and images (two-way, with replacement), so both sources of noise widen it.
- `verdict`: THE rule, stated once (RULE) and applied to every claim.
- `mmd2`: unbiased MMD^2 with RBF kernels (Gretton et al. 2012), `latent_mmd` over latent vectors (one per
  latent position, from many held-out crops) against N(0, I), raw or channel-standardised, and
  `paired_mmd_bootstrap` for the difference between two arms (same crops, same seeds, same N(0, I) draw).
- `hf_energy`: the fraction of a latent's spatial power above half its Nyquist frequency (the KL sweep's
  diffusability proxy).
"""

from __future__ import annotations

import numpy as np

RULE = ("**reproduced** when the 95% interval of the paired difference excludes 0 in the paper's direction, "
        "**refuted** when it excludes 0 in the other direction, **inconclusive** otherwise")


def paired_bootstrap(base, variant, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """base, variant: [seeds, images] of one metric (same order in both). Returns {mean, lo, hi, seeds,
    images, per_seed}: the mean of d = base - variant and its bootstrap interval over seeds and images."""
    d = np.asarray(base, dtype=np.float64) - np.asarray(variant, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"want [seeds, images] arrays, got shape {d.shape}")
    n_seeds, n_images = d.shape
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # counts of each seed / image in each resample: memory O(chunk x images)
        b = min(256, n_boot - start)
        cs = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=b)
        ci = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=b)
        boots[start:start + b] = np.einsum("bs,si,bi->b", cs, d, ci) / (n_seeds * n_images)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "seeds": n_seeds, "images": n_images,
            "per_seed": [float(x) for x in d.mean(axis=1)]}


def verdict(interval: dict, direction: int) -> str:
    """`direction`: +1 if the paper has base - variant > 0 (in the metric's units), -1 if < 0 (RULE)."""
    lo, hi = interval["lo"] * direction, interval["hi"] * direction
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "refuted"
    return "inconclusive"


# ------------------------------------------------------------------------------------------------
# MMD to N(0, I) over latent vectors
# ------------------------------------------------------------------------------------------------

BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)  # RBF sigma in units of sqrt(nz): N(0, I) pairs lie ~sqrt(2 nz) apart


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def mmd2(x: np.ndarray, y: np.ndarray, sigmas) -> np.ndarray:
    """Unbiased MMD^2 between samples x [n, d] and y [m, d], one value per RBF bandwidth."""
    dxx, dyy, dxy = _sqdist(x, x), _sqdist(y, y), _sqdist(x, y)
    n, m = len(x), len(y)
    out = []
    for s in sigmas:
        g = 1.0 / (2 * s * s)
        kxx, kyy, kxy = np.exp(-g * dxx), np.exp(-g * dyy), np.exp(-g * dxy)
        out.append((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                   - 2 * kxy.mean())
    return np.array(out)


def _vectors(latents: np.ndarray, crops: np.ndarray, n: int, rng, standardise: bool) -> np.ndarray:
    """latents [crops, positions, nz] -> n vectors drawn from the chosen crops' positions."""
    v = latents[crops].reshape(-1, latents.shape[-1]).astype(np.float64)
    if standardise:  # each channel to mean 0, std 1: what is left once the latents' scale is factored out
        v = (v - v.mean(0)) / (v.std(0) + 1e-12)
    return v[rng.choice(len(v), size=min(n, len(v)), replace=False)]


def latent_mmd(latents: np.ndarray, n: int = 512, seed: int = 0, standardise: bool = False) -> dict:
    """MMD^2 of n latent vectors (of latents [crops, positions, nz]) to n draws of N(0, I)."""
    rng = np.random.default_rng(seed)
    nz = latents.shape[-1]
    x = _vectors(latents, np.arange(len(latents)), n, rng, standardise)
    per = mmd2(x, rng.standard_normal((len(x), nz)), [b * np.sqrt(nz) for b in BANDWIDTHS])
    return {"sum": float(per.sum()), "per_bandwidth": [float(p) for p in per], "vectors": len(x)}


def paired_mmd_bootstrap(base: list, variant: list, n: int = 512, n_boot: int = 200, seed: int = 0,
                         standardise: bool = False, level: float = 0.95) -> dict:
    """base, variant: per seed, latents [crops, positions, nz] of the same crops. d = MMD^2(variant) -
    MMD^2(base) (summed over bandwidths; > 0: base closer to N(0, I)), its mean over seeds and a bootstrap
    interval resampling seeds and crops, the same resample and N(0, I) draw for both arms."""
    rng = np.random.default_rng(seed)
    n_seeds, n_crops, nz = len(base), len(base[0]), base[0].shape[-1]
    sig = [b * np.sqrt(nz) for b in BANDWIDTHS]

    def diff(seeds, crops, draw_seed):
        out = []
        for s in seeds:
            r1, r2 = np.random.default_rng(draw_seed), np.random.default_rng(draw_seed)
            xb, xv = _vectors(base[s], crops, n, r1, standardise), _vectors(variant[s], crops, n, r2, standardise)
            y = np.random.default_rng(draw_seed + 1).standard_normal((len(xb), nz))
            out.append(mmd2(xv, y, sig).sum() - mmd2(xb, y, sig).sum())
        return float(np.mean(out))

    point = diff(range(n_seeds), np.arange(n_crops), seed)
    boots = [diff(rng.integers(0, n_seeds, n_seeds), rng.integers(0, n_crops, n_crops), seed + 2 + i)
             for i in range(n_boot)]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return {"mean": point, "lo": float(lo), "hi": float(hi), "seeds": n_seeds, "images": n_crops}


# ------------------------------------------------------------------------------------------------
# Diffusability proxy
# ------------------------------------------------------------------------------------------------


def hf_energy(latents: np.ndarray, cutoff: float = 0.25) -> float:
    """Fraction of the spatial power of latents [N, C, h, w] (each map's mean removed) at radial frequency
    above `cutoff` cycles/sample (0.25 = half Nyquist). White noise gives ~0.80 (the high band's share of the
    frequency plane), a smooth image-like map much less."""
    x = np.asarray(latents, dtype=np.float64)
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(x)) ** 2
    fy, fx = np.fft.fftfreq(x.shape[-2]), np.fft.fftfreq(x.shape[-1])
    high = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) > cutoff
    total = power.sum()
    return float(power[..., high].sum() / total) if total > 0 else 0.0
