"""Pure nn modules and the registry: wavelets, encoders, decoders, discriminators, the autoencoder.

Model files hold only modules and tensor functions: no file I/O, printing, optimizers or distributed calls.
As in timm, this package imports every model family below, so their `@register_model` builders are in
the registry whenever anything from `litevae_cli.models` is imported.
"""

from litevae_cli.models import decoders, discriminators, gigagan, litevae_encoder, sd_vae_encoder  # noqa: F401 (registers)
from litevae_cli.models.autoencoder import Autoencoder, build_autoencoder, create_autoencoder
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.registry import create_model, get_entry, list_models, register_model

__all__ = ["Autoencoder", "DiagonalGaussian", "build_autoencoder", "create_autoencoder", "create_model",
           "get_entry", "list_models", "register_model"]
