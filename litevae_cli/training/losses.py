"""Training losses of LiteVAE (Sadat et al. 2024, "P"; spec "Losses"): generator and discriminator.

Generator (P Sec. 4 / App. G):
    L = w_l1 * L1 + w_lpips * LPIPS + w_kl * KL + w_wave * L_wave + w_gauss * L_gauss + w_adv * L_adv
Every term is a MEAN (spec decision): reconstruction terms per pixel (and per channel), KL per latent
element. The weights are preset values (a preset's `loss:` section, any `LossWeights`); the adversarial weight is a constant, not VQGAN's
adaptive weight (P: the adaptive weight made mixed-precision training unstable).

Discriminator: hinge (P Table 16 baseline) or non-saturating. Discriminators return a tuple of logit
tensors (PatchGAN: (patch_map,); U-Net discriminator: (pixel_map [N,1,H,W], global [N]); GigaGAN: one
head of every level's logits flattened, [N, L]); each head's term is computed on its own and the terms
are averaged over heads, so both U-Net heads count equally and every GigaGAN logit counts once.

Everything here runs in float32 with autocast off, whatever the caller's precision: the high-frequency
terms compare small differences that bf16/fp16 would round away, and the DWT is float32 anyway (OL).
One exception, `loss.lpips_precision`: LPIPS's backbone may run in bf16 (`lpips_bf16`, measured tolerance
beside it), its normalisation and differences still in float32. The discriminator runs once on real and
fake together where that is the same function of its logits (`discriminate`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Protocol, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from litevae_cli.config import ADV_KINDS
from litevae_cli.errors import UserError
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.wavelets import dwt2, split_bands
from litevae_cli.runtime import bfloat16_region as _bf16
from litevae_cli.runtime import needs_buffer_broadcast
from litevae_cli.runtime import float32_region as _fp32

TERMS = ("l1", "lpips", "kl", "wavelet", "gaussian", "adv", "total")  # fixed log columns


class LossWeights(Protocol):
    """The term weights GeneratorLoss reads (a preset's `loss:` section, `config.LossCfg`, has them)."""

    l1: float
    lpips: float
    lpips_net: str  # alex | vgg
    lpips_precision: str  # fp32 | bf16 | auto (`resolve_lpips_precision`)
    kl: float
    wavelet: float
    gaussian: float
    adversarial: float


# --------------------------------------------------------------------------------------------
# Reconstruction and regularisation terms
# --------------------------------------------------------------------------------------------


def l1_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per pixel and channel."""
    with _fp32(x.device):
        return (x.float() - x_hat.float()).abs().mean()


def wavelet_loss(x: torch.Tensor, x_hat: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss sqrt(d^2 + eps^2), mean, on the level-1 Haar detail bands (H, V, D).

    P App. G: the DWT is scaled by 1/2 before the comparison (the level-1 scale of the encoder's
    front end), and only the high-frequency sub-bands enter the loss.
    """
    with _fp32(x.device):
        _, hi = split_bands(dwt2(x.float(), "haar") / 2.0)
        _, hi_hat = split_bands(dwt2(x_hat.float(), "haar") / 2.0)
        return torch.sqrt((hi - hi_hat).square() + eps * eps).mean()


@functools.lru_cache(maxsize=None)
def _gaussian_1d(kernel_size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    k = torch.exp(-(r * r) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(torch.float32)


_KERNELS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (size, sigma, channels, device, dtype) -> (W, H)


def _blur_kernels(kernel_size: int, sigma: float, channels: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The depthwise kernels along W and H, built and copied to `device` once per (size, sigma, channels,
    device, dtype): a host-to-device copy per call would cost a transfer (and a stream sync from pageable
    memory on CUDA) four times per micro-batch."""
    key = (kernel_size, float(sigma), channels, str(device), dtype)
    if key not in _KERNELS:
        k = _gaussian_1d(kernel_size, float(sigma)).to(device=device, dtype=dtype)
        _KERNELS[key] = (k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1))
    return _KERNELS[key]


def gaussian_blur(x: torch.Tensor, kernel_size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Separable normalised Gaussian blur per channel, 'reflect' padding (same size as x).

    'reflect' (d c b | a b c d) is scipy.ndimage's mode='mirror'; it needs H, W > kernel_size // 2.
    """
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    c = x.shape[1]
    along_w, along_h = _blur_kernels(kernel_size, sigma, c, x.device, x.dtype)
    pad = kernel_size // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, along_w, groups=c)  # along W
    return F.conv2d(x, along_h, groups=c)  # along H


def gaussian_loss(x: torch.Tensor, x_hat: torch.Tensor, kernel_size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """L1 between the high-pass residuals x - h(x) and x_hat - h(x_hat), h a Gaussian blur (spec:
    on the residuals, not on the blurred images). 5x5, sigma 1 as in the spec."""
    with _fp32(x.device):
        both = torch.cat([x.float(), x_hat.float()])  # one blur for both: half the kernel launches
        hp, hp_hat = (both - gaussian_blur(both, kernel_size, sigma)).chunk(2)
        return (hp - hp_hat).abs().mean()


def kl_loss(posterior: DiagonalGaussian) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)), mean per latent element (spec decision; 0.5*(mu^2 + var - 1 - logvar))."""
    with _fp32(posterior.mean.device):
        return posterior.kl(dtype=torch.float32).mean()


# --------------------------------------------------------------------------------------------
# Adversarial terms
# --------------------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in ADV_KINDS:
        raise UserError(f"adversarial loss must be one of {', '.join(ADV_KINDS)}, got {kind!r}")


def _heads(logits: Sequence[torch.Tensor] | torch.Tensor, dtype: torch.dtype | None = torch.float32
           ) -> tuple[torch.Tensor, ...]:
    heads = (logits,) if isinstance(logits, torch.Tensor) else tuple(logits)
    if not heads:
        raise ValueError("a discriminator must return at least one logit tensor")
    return tuple(h if dtype is None else h.to(dtype) for h in heads)


def adversarial_g_loss(fake_logits: Sequence[torch.Tensor], kind: str = "hinge") -> torch.Tensor:
    """Generator side: hinge -mean(D(x_hat)); non-saturating mean(softplus(-D(x_hat))); mean over heads."""
    _check_kind(kind)
    with _fp32(_heads(fake_logits)[0].device):
        if kind == "hinge":
            terms = [-h.mean() for h in _heads(fake_logits)]
        else:
            terms = [F.softplus(-h).mean() for h in _heads(fake_logits)]
        return torch.stack(terms).mean()


def discriminator_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor],
                       kind: str = "hinge") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator side, mean over heads of each head's loss.

    hinge: relu(1 - D(x)).mean() + relu(1 + D(x_hat)).mean();
    non-saturating: softplus(-D(x)).mean() + softplus(D(x_hat)).mean().
    Returns (loss, detached terms): total, real, fake (the two halves) and logits_real, logits_fake
    (mean logits over heads, to watch the discriminator's margin).
    """
    _check_kind(kind)
    real, fake = _heads(real_logits), _heads(fake_logits)
    if len(real) != len(fake):
        raise ValueError(f"real and fake logits have {len(real)} and {len(fake)} heads")
    with _fp32(real[0].device):
        if kind == "hinge":
            real_terms = torch.stack([F.relu(1.0 - h).mean() for h in real])
            fake_terms = torch.stack([F.relu(1.0 + h).mean() for h in fake])
        else:
            real_terms = torch.stack([F.softplus(-h).mean() for h in real])
            fake_terms = torch.stack([F.softplus(h).mean() for h in fake])
        loss = (real_terms + fake_terms).mean()
        terms = {
            "total": loss.detach(),
            "real": real_terms.mean().detach(),
            "fake": fake_terms.mean().detach(),
            "logits_real": torch.stack([h.detach().mean() for h in real]).mean(),
            "logits_fake": torch.stack([h.detach().mean() for h in fake]).mean(),
        }
    return loss, terms


def discriminate(disc: nn.Module, disc_ddp: nn.Module, x: torch.Tensor,
                 x_fake: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(real logits, fake logits) of a discriminator in training (`disc_ddp`: its DDP wrapper, or itself).
    One call on real and fake concatenated where no image's logits depend on the rest of its batch (no
    BatchNorm: the U-Net and GigaGAN discriminators): half the launches, one DDP forward and one
    spectral-norm power iteration per step instead of two. The loss is the same function of the logits.
    A BatchNorm discriminator (PatchGAN) normalises the real and the fake batch apart, as always: two calls."""
    if needs_buffer_broadcast(disc):
        return _heads(disc_ddp(x), dtype=None), _heads(disc_ddp(x_fake), dtype=None)
    n = x.shape[0]
    heads = _heads(disc_ddp(torch.cat([x, x_fake])), dtype=None)
    return tuple(h[:n] for h in heads), tuple(h[n:] for h in heads)


# --------------------------------------------------------------------------------------------
# LPIPS precision
# --------------------------------------------------------------------------------------------

LPIPS_PRECISIONS = ("fp32", "bf16", "auto")  # loss.lpips_precision
# bf16 LPIPS (`lpips_bf16`) against fp32, measured on CPU with random-init backbones (the reference weights
# are not in the test environment) and the package's linear heads, 64 px pairs x vs x + noise (0.02-0.8):
# |bf16 - fp32| <= 0.5% of the fp32 distance for distances >= 0.002 (alex 0.18%, vgg 0.36% at most), and
# <= 1.5e-5 absolute below that (nearly identical pairs: 2.6-2.9% of a 3.5e-4 distance). Stated tolerance,
# asserted by tests/test_step_efficiency.py: 1% relative + 2e-5 absolute. The plain autocast of the whole
# package module (normalisation and differences in bf16 too) was 4% off at small distances.
LPIPS_BF16_RTOL, LPIPS_BF16_ATOL = 1e-2, 2e-5


def resolve_lpips_precision(setting: str, run_precision: str) -> str:
    """`loss.lpips_precision`: fp32 | bf16 as given; auto = bf16 when the run's autocast is bf16 (the
    backbone's convs then run at bf16 speed, within the tolerance above), fp32 otherwise (fp16's range
    is not measured here)."""
    if setting not in LPIPS_PRECISIONS:
        raise UserError(f"loss.lpips_precision must be one of {', '.join(LPIPS_PRECISIONS)}, got {setting!r}")
    if setting == "auto":
        return "bf16" if run_precision == "bf16" else "fp32"
    return setting


def lpips_bf16(net: nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """LPIPS (an `lpips.LPIPS` v0.1, linear heads, spatial mean) with the backbone in bf16 autocast on x and
    x_hat together (one batched call), and the per-layer unit normalisation, squared differences and
    heads in float32: the differences of nearly equal features are what bf16 would round away.
    Per-pair distances [N, 1, 1, 1], float32. Tolerance against fp32: `LPIPS_BF16_RTOL`/`ATOL`."""
    with _bf16(x.device):
        feats = net.net(net.scaling_layer(torch.cat([x.float(), x_hat.float()])))
    with _fp32(x.device):
        total = torch.zeros((), device=x.device)
        for k in range(net.L):
            f = feats[k].float()
            f = f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            a, b = f.chunk(2)
            total = total + net.lins[k]((a - b).square()).mean(dim=(2, 3), keepdim=True)
        return total


# --------------------------------------------------------------------------------------------
# The generator loss module
# --------------------------------------------------------------------------------------------


class GeneratorLoss(nn.Module):
    """The weighted generator loss; holds the frozen LPIPS network when its weight is > 0.

    Has no trainable parameters. LPIPS stays in eval mode even when the module is put in train mode
    (the lpips package's linear heads have dropout).
    """

    needs_reconstruction = True  # the step decodes; `training.distill.DistillLoss` may say no

    def __init__(self, cfg: LossWeights, adv_kind: str = "hinge", weights_dir: Optional[str | Path] = None,
                 lpips_random_backbone: bool = False, download_weights: bool = False, run_precision: str = "fp32"):
        super().__init__()
        _check_kind(adv_kind)
        self.cfg = cfg  # term weights (preset values)
        self.adv_kind = adv_kind  # hinge | non-saturating, as the discriminator's loss
        # fp32 | bf16: the LPIPS backbone's precision (loss.lpips_precision resolved against the run's)
        self.lpips_precision = resolve_lpips_precision(getattr(cfg, "lpips_precision", "fp32"), run_precision)
        self.lpips: Optional[nn.Module] = None
        if cfg.lpips > 0:
            from litevae_cli.metrics.weights import build_lpips

            # A missing backbone file is a UserError naming it: a silent skip would change the recipe.
            self.lpips = build_lpips(cfg.lpips_net, weights_dir, random_backbone=lpips_random_backbone,
                                     download=download_weights)

    def train(self, mode: bool = True) -> "GeneratorLoss":
        super().train(mode)
        if self.lpips is not None:
            self.lpips.eval()
        return self

    def lpips_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS distance; inputs in [-1, 1] as the lpips package expects (normalize=False); with
        `lpips_precision` bf16 through `lpips_bf16`."""
        if self.lpips is None:
            raise RuntimeError("LPIPS was not built (loss.lpips is 0)")
        if self.lpips_precision == "bf16":
            return lpips_bf16(self.lpips, x, x_hat).mean()
        with _fp32(x.device):
            return self.lpips(x.float(), x_hat.float()).mean()

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, posterior: DiagonalGaussian,
                fake_logits: Optional[Sequence[torch.Tensor]] = None,
                adv_weight: Optional[float] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, terms): terms are unweighted and detached, by name (`TERMS`); a term with weight 0
        (or no fake_logits for adv) is not computed and reported as 0.0 so log columns stay fixed.
        `adv_weight` defaults to `cfg.adversarial`."""
        cfg = self.cfg
        w_adv = cfg.adversarial if adv_weight is None else float(adv_weight)
        weighted = [
            ("l1", cfg.l1, lambda: l1_loss(x, x_hat)),
            ("lpips", cfg.lpips, lambda: self.lpips_loss(x, x_hat)),
            ("kl", cfg.kl, lambda: kl_loss(posterior)),
            ("wavelet", cfg.wavelet, lambda: wavelet_loss(x, x_hat)),
            ("gaussian", cfg.gaussian, lambda: gaussian_loss(x, x_hat)),
            ("adv", w_adv if fake_logits is not None else 0.0,
             lambda: adversarial_g_loss(fake_logits, self.adv_kind)),
        ]
        zero = torch.zeros((), device=x.device, dtype=torch.float32)
        total = zero
        terms: dict[str, torch.Tensor] = {}
        for name, weight, compute in weighted:
            if weight > 0:
                value = compute()
                total = total + weight * value
                terms[name] = value.detach()
            else:
                terms[name] = torch.zeros_like(zero)  # own tensor: callers may accumulate in place
        terms["total"] = total.detach()
        return total, terms
