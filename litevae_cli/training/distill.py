"""Encoder distillation: a LiteVAE encoder trained into an existing VAE's latent space (`litevae distill`).

The teacher is any MODEL (a diffusers AutoencoderKL folder of SD 1.x/2.x, SDXL, SD3 or FLUX, or a model
trained here); it stays frozen, in eval mode and without gradients. The model that trains is one
autoencoder: the student encoder (a registry name such as `litevae-b`, with the teacher's latent channel
count, or the encoder of a MODEL given as `--student`) + the teacher's decoder, frozen
(`train.trainable: encoder`), + the teacher's latent factors (`ModelSpec.latent_factors`). So the result
decodes with the teacher's own decoder, and every diffusion model trained on the teacher's latents reads
the student's.

Loss (`DistillLoss`, per element means, every term fp32), teacher posterior N(mu_t, var_t), student N(mu_s, var_s):
    mean:    ((mu_s - mu_t) / sigma_c)^2, sigma_c the teacher latents' std per channel: `latents_std` when the
             teacher publishes it, else 1 / scaling_factor (LDM Sec. 4.3.2 sets that factor to 1 / std), else 1
    logvar:  kl:  KL(N(0, var_t) || N(0, var_s)) = 0.5 * (r - 1 - log r), r = var_t / var_s (the variances alone:
                  the means are the first term's, and a full KL would weight them by 1 / var_s, ~1e6 for SD)
             nll: 0.5 * ((z_t - sg(mu_s))^2 / var_s + log var_s), z_t a teacher sample (fits var_s to var_t)
    + the reconstruction terms of `loss:` (L1, LPIPS, ...) of the frozen teacher decoder's output against the
      input, when their weights are > 0 (the decoder runs only then).
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn

from litevae_cli.files.model_file import LoadedModel, load_autoencoder, load_weights
from litevae_cli.config import Config
from litevae_cli.errors import UserError
from litevae_cli.model_spec import ModelSpec
from litevae_cli.models import list_models
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.runtime import float32_region as _fp32
from litevae_cli.training.losses import GeneratorLoss


@dataclasses.dataclass
class Teacher:
    """The frozen teacher and, when --student is a MODEL, the encoder that starts the student."""

    loaded: LoadedModel
    student_init: Optional[LoadedModel] = None


def load_teacher(cfg: Config, download: bool = False, use_ema: bool = True) -> Teacher:
    """The teacher (and a student MODEL) of a distill config, checked against each other; one line each.
    `download`: a Hub id is fetched and verified (`files.hub`)."""
    if cfg.distill.teacher is None:
        raise UserError("`litevae distill` needs --teacher VAE (a diffusers AutoencoderKL folder, or any MODEL)")
    teacher = load_autoencoder(cfg.distill.teacher, use_ema=use_ema, download=download)
    student_init = None
    if not _is_registered(cfg.distill.student):
        if not Path(cfg.distill.student).exists():
            raise UserError(f"--student {cfg.distill.student!r} is neither a registered encoder nor a model path")
        if cfg.distill.student_kwargs:
            raise UserError("distill.student_kwargs go with a registry name; --student is a model path")
        student_init = load_autoencoder(cfg.distill.student, use_ema=use_ema)
        if student_init.spec.nz != teacher.spec.nz:
            raise UserError(f"--student {student_init.path} has {student_init.spec.nz} latent channels but the "
                            f"teacher {teacher.path} has {teacher.spec.nz}: a distilled encoder must match the "
                            f"teacher's latent space (give a registry name, e.g. litevae-b, to start fresh)")
    return Teacher(teacher, student_init)


def _is_registered(name: str) -> bool:
    return name in list_models()


def distill_spec(cfg: Config, teacher: Teacher) -> ModelSpec:
    """Student encoder + the teacher's decoder with the teacher's latent width and factors."""
    t = teacher.loaded.spec
    if teacher.student_init is not None:
        s = teacher.student_init.spec
        encoder, encoder_kwargs = s.encoder, dict(s.encoder_kwargs)
    else:
        encoder, encoder_kwargs = cfg.distill.student, dict(cfg.distill.student_kwargs)
    return ModelSpec(encoder, t.decoder, t.nz, encoder_kwargs, dict(t.decoder_kwargs), dict(t.latent_factors))


def check_student_fits(student: nn.Module, teacher: Teacher) -> None:
    """The student's latent grid must be the teacher's (same downsampling factor)."""
    ours = getattr(student, "downsample_factor", None)
    theirs = getattr(teacher.loaded.model.encoder, "downsample_factor", None)
    if ours is not None and theirs is not None and ours != theirs:
        raise UserError(f"the teacher {teacher.loaded.path} makes latents {theirs}x smaller than the image, the "
                        f"student encoder {ours}x: their latent grids cannot match")


def init_from_teacher(model: nn.Module, ema: Optional[nn.Module], teacher: Teacher) -> None:
    """A fresh distill run: the teacher's decoder (and a student MODEL's encoder) into the model and its EMA."""
    parts = [("decoder", teacher.loaded.model.decoder.state_dict(), teacher.loaded.path)]
    if teacher.student_init is not None:
        parts.append(("encoder", teacher.student_init.model.encoder.state_dict(), teacher.student_init.path))
    for net in (model, ema):
        if net is not None:
            for name, weights, source in parts:
                load_weights(getattr(net, name), weights, source)


def latent_std(spec: ModelSpec) -> torch.Tensor:
    """[nz] the teacher latents' std per channel from its published factors (module docstring)."""
    f = spec.latent_factors or {}
    if f.get("latents_std") is not None:
        std = torch.tensor([float(v) for v in f["latents_std"]], dtype=torch.float32)
        if std.numel() != spec.nz:
            raise UserError(f"the teacher's latents_std has {std.numel()} values for {spec.nz} latent channels")
    elif f.get("scaling_factor"):
        std = torch.full((spec.nz,), 1.0 / float(f["scaling_factor"]))
    else:
        std = torch.ones(spec.nz)
    if not bool(torch.isfinite(std).all()) or bool((std <= 0).any()):
        raise UserError(f"the teacher's latent factors give a non-positive or non-finite std: {std.tolist()}")
    return std


def logvar_kl(student_logvar: torch.Tensor, teacher_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(0, var_t) || N(0, var_s)) per element: 0.5 * (r - 1 - log r), r = var_t / var_s."""
    log_r = teacher_logvar - student_logvar
    return 0.5 * (log_r.exp() - 1.0 - log_r)


def logvar_nll(student: DiagonalGaussian, teacher: DiagonalGaussian) -> torch.Tensor:
    """Gaussian NLL (without the constant) of a teacher sample under N(sg(mu_s), var_s), per element."""
    z = teacher.sample()
    return 0.5 * ((z - student.mean.detach()).square() * torch.exp(-student.logvar) + student.logvar)


class DistillLoss(GeneratorLoss):
    """GeneratorLoss (its reconstruction terms through the frozen decoder) + the latent terms against the
    frozen teacher encoder, which this module holds (so `rt.place` puts it on the device)."""

    def __init__(self, cfg: Config, teacher_encoder: nn.Module, teacher_spec: ModelSpec,
                 weights_dir=None, precision_region: Callable = nullcontext, download_weights: bool = False):
        super().__init__(cfg.loss, cfg.discriminator.loss, weights_dir=weights_dir, download_weights=download_weights)
        self.distill = cfg.distill
        self.teacher = teacher_encoder.eval().requires_grad_(False)
        self.precision_region = precision_region  # the teacher at the run's precision; moments read in fp32
        self.register_buffer("inv_std", latent_std(teacher_spec).reciprocal().view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> "DistillLoss":
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def needs_reconstruction(self) -> bool:
        c = self.cfg
        return max(c.l1, c.lpips, c.wavelet, c.gaussian) > 0

    def forward(self, x, x_hat, posterior, fake_logits=None, adv_weight=None):
        total, terms = super().forward(x, x_hat, posterior, fake_logits, adv_weight)
        with torch.no_grad(), self.precision_region():
            target = self.teacher(x)
        with _fp32(x.device):
            target = DiagonalGaussian(target.moments.float())
            mean_s, logvar_s = posterior.mean.float(), posterior.logvar.float()
            mean_term = ((mean_s - target.mean) * self.inv_std).square().mean()
            if self.distill.logvar_loss == "kl":
                logvar_term = logvar_kl(logvar_s, target.logvar).mean()
            else:
                logvar_term = logvar_nll(DiagonalGaussian(torch.cat([mean_s, logvar_s], 1)), target).mean()
            total = total + self.distill.mean * mean_term + self.distill.logvar * logvar_term
        terms.update(latent_mean=mean_term.detach(), latent_logvar=logvar_term.detach(), total=total.detach())
        return total, terms
