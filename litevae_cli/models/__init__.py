"""Pure nn modules and the registry: wavelets, encoders, decoders, discriminators, the autoencoder.

Model files hold only modules and tensor functions: no file I/O, printing, optimizers or distributed calls.
"""

from litevae_cli.models.autoencoder import Autoencoder, AutoencoderSpec, build_autoencoder
from litevae_cli.models.posterior import DiagonalGaussian
from litevae_cli.models.registry import create_model, get_entry, list_models, register_model

__all__ = ["Autoencoder", "AutoencoderSpec", "DiagonalGaussian", "build_autoencoder", "create_model",
           "get_entry", "list_models", "register_model"]
