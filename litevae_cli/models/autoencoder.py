"""The autoencoder: an encoder and a decoder composed by their registry names.

`build_autoencoder("litevae-b", "smc-decoder", nz=12)` is what presets and checkpoints describe: the
registry names plus keyword overrides, never class paths, so saved runs survive refactors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.registry import create_model, get_entry


@dataclass
class AutoencoderSpec:
    """What a checkpoint stores to rebuild the autoencoder: registry names and their overrides."""

    encoder: str
    decoder: str
    nz: int = 12
    encoder_kwargs: dict = field(default_factory=dict)
    decoder_kwargs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderSpec":
        return cls(**d)


class Autoencoder(nn.Module):
    """encode(x) -> DiagonalGaussian; decode(z) -> image; forward(x) -> (reconstruction, posterior)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, spec: AutoencoderSpec):
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


def build_autoencoder(encoder: str, decoder: str, nz: int = 12, encoder_kwargs: dict | None = None,
                      decoder_kwargs: dict | None = None) -> Autoencoder:
    """Compose a registered encoder and decoder with a shared latent width nz."""
    for name, kind in ((encoder, "encoder"), (decoder, "decoder")):
        if get_entry(name).kind != kind:
            raise ValueError(f"{name!r} is registered as a {get_entry(name).kind}; expected a {kind} here")
    spec = AutoencoderSpec(encoder, decoder, nz, dict(encoder_kwargs or {}), dict(decoder_kwargs or {}))
    return Autoencoder(create_model(encoder, nz=nz, **spec.encoder_kwargs),
                       create_model(decoder, nz=nz, **spec.decoder_kwargs), spec)
