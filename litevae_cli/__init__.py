"""litevae: train, evaluate and use LiteVAE autoencoders (Sadat et al., NeurIPS 2024, arXiv 2405.14477).

`load(path)` gives a trained model (run folder, checkpoint, export or diffusers folder) as `LiteVAE`, a
diffusers model with AutoencoderKL's interface (`litevae_cli.diffusers_vae`). `create_model` and
`list_models` are the Python entry points to the model registry, in the manner of `timm.create_model`.
All are imported lazily so that `import litevae_cli` and `litevae --help` pay for neither torch nor diffusers.
`ModelFileError` is what `load` / `LiteVAE.from_pretrained` raise for a file or folder that cannot be used.
"""

from litevae_cli.errors import ModelFileError, UserError

__version__ = "0.2.0"

_REGISTRY_NAMES = ("create_model", "list_models", "build_autoencoder", "create_autoencoder")
_DIFFUSERS_NAMES = ("LiteVAE", "load")
__all__ = ["__version__", "ModelFileError", "UserError", *_DIFFUSERS_NAMES, *_REGISTRY_NAMES]


def __getattr__(name):
    if name in _REGISTRY_NAMES:
        from litevae_cli import models

        return getattr(models, name)
    if name in _DIFFUSERS_NAMES:
        from litevae_cli import diffusers_vae

        return getattr(diffusers_vae, name)
    raise AttributeError(f"module 'litevae_cli' has no attribute {name!r}")
