"""The autoencoder: an encoder and a decoder composed by their registry names.

`create_autoencoder(spec)` builds the `ModelSpec` that presets, checkpoints and exports hold;
`build_autoencoder("litevae-b", "smc-decoder", nz=12)` is the same from the names.
`set_trainable("decoder")` freezes the encoder (the sd-vae-ft-mse recipe: the latent space stays valid),
`set_trainable("encoder")` freezes the decoder (distillation into a teacher's latent space): the frozen
half has no gradient and stays in eval mode whatever `train()` is called with.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from litevae_cli.model_spec import TRAINABLE, ModelSpec
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.registry import create_model, get_entry


class Autoencoder(nn.Module):
    """encode(x) -> DiagonalGaussian; decode(z) -> image; forward(x) -> (reconstruction, posterior)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, spec: ModelSpec):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.spec = spec
        self.trainable = "all"

    def set_trainable(self, part: str) -> "Autoencoder":
        """Train `part` (all | encoder | decoder) only: the other half gets requires_grad=False and eval mode."""
        if part not in TRAINABLE:
            raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {part!r}")
        self.trainable = part
        for name in ("encoder", "decoder"):
            getattr(self, name).requires_grad_(part in ("all", name))
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Autoencoder":
        super().train(mode)
        for name in ("encoder", "decoder"):
            if self.trainable not in ("all", name):
                getattr(self, name).eval()  # a frozen half never trains (dropout off)
        return self

    @property
    def nz(self) -> int:
        return self.spec.nz

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None,
                decode: bool = True) -> tuple[torch.Tensor | None, DiagonalGaussian]:
        """(reconstruction, posterior); `decode=False` skips the decoder (None): distillation without a
        reconstruction term needs only the posterior."""
        posterior = self.encode(x)
        if not decode:
            return None, posterior
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior


def create_autoencoder(spec: ModelSpec) -> Autoencoder:
    """Compose the registered encoder and decoder of `spec` with its shared latent width nz."""
    for name, kind in ((spec.encoder, "encoder"), (spec.decoder, "decoder")):
        if get_entry(name).kind != kind:
            raise ValueError(f"{name!r} is registered as a {get_entry(name).kind}; expected a {kind} here")
    return Autoencoder(create_model(spec.encoder, nz=spec.nz, **spec.encoder_kwargs),
                       create_model(spec.decoder, nz=spec.nz, **spec.decoder_kwargs), spec)


def build_autoencoder(encoder: str, decoder: str, nz: int = 12, encoder_kwargs: dict | None = None,
                      decoder_kwargs: dict | None = None) -> Autoencoder:
    """`create_autoencoder` from the names: a registered encoder and decoder with a shared latent width nz."""
    return create_autoencoder(ModelSpec(encoder, decoder, nz, dict(encoder_kwargs or {}), dict(decoder_kwargs or {})))
