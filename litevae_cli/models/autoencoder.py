"""The autoencoder: an encoder and a decoder composed by their registry names.

`create_autoencoder(spec)` builds the `ModelSpec` that presets, checkpoints and exports hold;
`build_autoencoder("litevae-b", "smc-decoder", nz=12)` is the same from the names.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from litevae_cli.model_spec import ModelSpec
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.registry import create_model, get_entry


class Autoencoder(nn.Module):
    """encode(x) -> DiagonalGaussian; decode(z) -> image; forward(x) -> (reconstruction, posterior)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, spec: ModelSpec):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.spec = spec

    @property
    def nz(self) -> int:
        return self.spec.nz

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
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
