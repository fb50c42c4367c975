"""The diagonal Gaussian posterior q(z|x) that every encoder's 2*nz output channels parametrise."""

from __future__ import annotations

import torch

LOGVAR_RANGE = (-30.0, 20.0)  # clamp as in LDM / open-LiteVAE


class DiagonalGaussian:
    """Mean and log-variance split from moments [N, 2*nz, h, w]; log-variance clamped to [-30, 20]."""

    def __init__(self, moments: torch.Tensor):
        if moments.shape[1] % 2:
            raise ValueError(f"moments need an even channel count (mean, logvar), got {moments.shape[1]}")
        self.moments = moments
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(*LOGVAR_RANGE)

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per element, [N, nz, h, w]: 0.5 * (mu^2 + var - 1 - logvar)."""
        return 0.5 * (self.mean.square() + self.var - 1.0 - self.logvar)
