"""The one description of an autoencoder: registry names, latent width and builder overrides (torch-free).

A preset's `model:` section (`config.Config.model`), a checkpoint's `model_spec` and an export's
metadata are all this type (as a plain dict on disk); `models.create_autoencoder(spec)` builds it from
the registry, and `describe()` is how every command and error message names it. Names, never class
paths, so saved runs survive refactors.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

TRAINABLE = ("all", "decoder", "encoder")  # train.trainable: which half of an autoencoder trains


@dataclass
class ModelSpec:
    encoder: str  # registry name of an encoder, e.g. litevae-b
    decoder: str  # registry name of a decoder, e.g. smc-decoder
    nz: int = 12  # latent channels (P: 4, 12 or 16; 12 is the main recipe)
    encoder_kwargs: dict = field(default_factory=dict)  # overrides passed to the encoder builder
    decoder_kwargs: dict = field(default_factory=dict)  # overrides passed to the decoder builder
    # The latent space's published normalisation, kept from an imported VAE (or a distillation teacher) and
    # written back on export: scaling_factor, shift_factor, latents_mean, latents_std (diffusers' names,
    # LDM Sec. 4.3.2: the diffusion model sees (z - shift) * scale). Empty: none known (a LiteVAE trained
    # here gets its factors from encode-dataset's stats.json).
    latent_factors: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**d)

    def architecture(self) -> dict:
        """What decides the weights' meaning: the spec without its latent factors, as plain JSON data (lists,
        not tuples), so a spec read from a .pt and one read from JSON compare equal."""
        return json.loads(json.dumps({k: v for k, v in self.to_dict().items() if k != "latent_factors"}))

    def describe(self) -> str:
        """'litevae-b + smc-decoder (nz=12)', with any builder overrides after the width."""
        extra = "".join(f", {k}={v}" for k, v in (("encoder_kwargs", self.encoder_kwargs),
                                                   ("decoder_kwargs", self.decoder_kwargs)) if v)
        return f"{self.encoder} + {self.decoder} (nz={self.nz}{extra})"


def describe_spec(d: dict | None) -> str:
    """`ModelSpec.describe` of a stored spec dict, or 'unknown' when there is none or it does not fit."""
    try:
        return ModelSpec.from_dict(d).describe()
    except TypeError:
        return "unknown"
