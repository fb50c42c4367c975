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
        like = {"device": self.mean.device, "dtype": self.mean.dtype}
        # generator=None is left out, not passed: torch.compile cannot trace randn's generator overload with
        # a dynamic shape. The same draw from the global generator either way.
        noise = torch.randn(self.mean.shape, **like) if generator is None else \
            torch.randn(self.mean.shape, generator=generator, **like)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """KL(q || N(0, I)) per element, [N, nz, h, w], in `dtype` (default: the moments'):
        0.5 * (mu^2 + var - 1 - logvar), the one statement of the formula (loss and inspect-latents)."""
        mean, logvar = (self.mean, self.logvar) if dtype is None else (self.mean.to(dtype), self.logvar.to(dtype))
        return kl_standard_normal(mean, logvar)


def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per element: 0.5 * (mu^2 + var - 1 - logvar)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
