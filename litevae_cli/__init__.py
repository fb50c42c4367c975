"""litevae: train, evaluate and use LiteVAE autoencoders (Sadat et al., NeurIPS 2024, arXiv 2405.14477).

`create_model` and `list_models` are the Python entry points to the model registry, in the manner of
`timm.create_model`. They are imported lazily so that `litevae --help` does not pay for torch.
"""

__version__ = "0.2.0"

__all__ = ["__version__", "create_model", "list_models", "build_autoencoder", "create_autoencoder"]


def __getattr__(name):
    if name in __all__[1:]:
        from litevae_cli import models

        return getattr(models, name)
    raise AttributeError(f"module 'litevae_cli' has no attribute {name!r}")
