"""`LiteVAE`: a trained LiteVAE as a diffusers model, in place of `AutoencoderKL` in diffusers scripts and pipelines.

`LiteVAE` is a diffusers `ModelMixin` + `ConfigMixin` around the registry's encoder and decoder (the
same modules, and the same state_dict keys, as `models.Autoencoder`). It has AutoencoderKL's interface:
- `encode(x).latent_dist` is diffusers' own `DiagonalGaussianDistribution` of the encoder's moments
  (`sample`, `mode`, `mean`, `std`, `var`, `kl`, `nll`); `decode(z).sample`; `vae(x).sample`.
- `config`: `encoder_type`, `decoder_type` (registry names), `latent_channels`, `encoder_kwargs`, `decoder_kwargs`,
  `sample_size`, `scaling_factor`, `shift_factor`, `block_out_channels` (the decoder's four level
  widths, so pipelines compute `vae_scale_factor = 2 ** (4 - 1) = 8`), `in_channels`, `out_channels`,
  `force_upcast`, the checkpoint format version and `source` (training step, EMA or not).
- `enable_tiling()` / `enable_slicing()`: as in diffusers, encode images larger than
  `tile_sample_min_size` (512 px) and decode latents larger than `tile_latent_min_size` (64) in blended
  tiles of that size (`litevae_cli.inference.tiling`); smaller inputs pass whole. Slicing: one image at a time.

Normalisation: diffusers scripts feed the diffusion model `latent_dist.sample() * scaling_factor` (and
`(z - shift_factor) * scaling_factor` where the pipeline uses a shift), so `scaling_factor` and
`shift_factor` are the factors of SAMPLED latents from encode-dataset's stats.json (LDM's convention,
Rombach et al. 2022, Sec. 4.3.2; see `latents.stats`). Until statistics are given (`stats=` here,
`litevae export --stats`) they are the identity: DEFAULT_SCALING_FACTOR = 1.0, DEFAULT_SHIFT_FACTOR = 0.0.

`LiteVAE.from_pretrained(path)` (and `litevae_cli.load(path)`) accepts a diffusers folder, an export
`.safetensors`, a training checkpoint or a run folder, all read by `files.model_file.load_autoencoder`
(safetensors or `weights_only=True`) with the CLI's checks. Any problem
is a `ModelFileError` (a `UserError`) with the CLI's one-line message. A Hub id's config.json and weights
are fetched into the Hugging Face cache (`huggingface_hub.hf_hub_download`) and read the same way. `save_pretrained(dir)` writes config.json and
diffusion_pytorch_model.safetensors; `litevae export --format diffusers` is `files.export`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from litevae_cli.errors import ModelFileError, UserError, one_line
from litevae_cli.files.checkpoint import CHECKPOINT_VERSION
from litevae_cli.files.diffusers_folder import (CLASS_NAME, CONFIG_NAME, WEIGHTS_NAME, is_diffusers_weights,
                                                looks_like_hub_id, read_config)
from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.latents.stats import latent_stats_factors
from litevae_cli.models.autoencoder import Autoencoder, build_autoencoder
from litevae_cli.models.layers import Upsample
from litevae_cli.inference.tiling import tiled_map

DEFAULT_SAMPLE_SIZE = 256  # px, when the training resolution is unknown
DEFAULT_SCALING_FACTOR = 1.0  # identity until encode-dataset statistics are given
DEFAULT_SHIFT_FACTOR = 0.0
TILE_SAMPLE_MIN_SIZE = 512  # px: enable_tiling() tiles only larger images (diffusers' SD default)
TILE_OVERLAP_FACTOR = 0.25  # of a tile, as diffusers' tile_overlap_factor
DOWNSCALE = 8  # image px per latent: 3 Haar DWT levels in the encoder, 3 x2 upsamplings in the decoder
# What a LiteVAE folder's config.json carries beyond the model spec (which its weights' reader takes).
_KEPT_CONFIG = ("sample_size", "scaling_factor", "shift_factor", "block_out_channels", "in_channels", "out_channels",
                "force_upcast", "source")


def decoder_widths(decoder: torch.nn.Module) -> tuple[int, ...]:
    """The decoder's level widths from full resolution up (SD-VAE `block_out_channels`): one level per
    upsampling plus the last; pipelines read 2 ** (len - 1) as the VAE's scale factor."""
    ups = [m.conv.in_channels for m in decoder.modules() if isinstance(m, Upsample)]
    return (decoder.conv_out.weight.shape[1], *reversed(ups))


class LiteVAE(ModelMixin, ConfigMixin):
    """A LiteVAE autoencoder with diffusers' AutoencoderKL interface (module docstring)."""

    config_name = "config.json"
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, encoder_type: str = "litevae-b", decoder_type: str = "smc-decoder", latent_channels: int = 12,
                 encoder_kwargs: Optional[dict] = None, decoder_kwargs: Optional[dict] = None,
                 sample_size: int = DEFAULT_SAMPLE_SIZE, scaling_factor: float = DEFAULT_SCALING_FACTOR,
                 shift_factor: float = DEFAULT_SHIFT_FACTOR, block_out_channels: Optional[tuple] = None,
                 in_channels: int = 3, out_channels: int = 3, force_upcast: bool = True,
                 litevae_format_version: int = CHECKPOINT_VERSION, source: Optional[dict] = None):
        super().__init__()
        if str(litevae_format_version) != str(CHECKPOINT_VERSION):
            raise ValueError(f"this {CLASS_NAME} config has format version {litevae_format_version}, but this "
                             f"litevae reads version {CHECKPOINT_VERSION} (App. G block layout); re-export it")
        if (in_channels, out_channels) != (3, 3):
            raise ValueError(f"{CLASS_NAME} reads and writes RGB images (in_channels = out_channels = 3)")
        ae = build_autoencoder(encoder_type, decoder_type, latent_channels, encoder_kwargs, decoder_kwargs)
        self.encoder, self.decoder, self.spec = ae.encoder, ae.decoder, ae.spec
        widths = decoder_widths(self.decoder)
        if 2 ** (len(widths) - 1) != DOWNSCALE:
            raise ValueError(f"decoder {decoder_type} upsamples {2 ** (len(widths) - 1)}x; "
                             f"{CLASS_NAME} needs {DOWNSCALE}x")
        if block_out_channels is not None and tuple(block_out_channels) != widths:
            raise ValueError(f"block_out_channels {tuple(block_out_channels)} do not match the decoder's {widths}")
        self.register_to_config(block_out_channels=widths)
        self.use_slicing = self.use_tiling = False
        self.tile_sample_min_size, self.tile_latent_min_size = TILE_SAMPLE_MIN_SIZE, TILE_SAMPLE_MIN_SIZE // DOWNSCALE
        self.tile_overlap_factor, self.tile_overlap = TILE_OVERLAP_FACTOR, None

    # ------------------------------------------------------------------------- AutoencoderKL interface
    def enable_tiling(self, tile_sample_min_size: Optional[int] = None, tile_overlap: Optional[int] = None,
                      tile_latent_min_size: Optional[int] = None) -> None:
        """Tile images above `tile_sample_min_size` px (default 512) and latents above `tile_latent_min_size`
        (default that / 8) in tiles of that size, overlapping by `tile_overlap` px (default: a quarter). Like
        diffusers, the sizes are also attributes of the same names; image tile and overlap are multiples of 8."""
        before = self.tile_sample_min_size, self.tile_latent_min_size, self.tile_overlap
        if tile_sample_min_size is not None:
            self.tile_sample_min_size = int(tile_sample_min_size)
            self.tile_latent_min_size = self.tile_sample_min_size // DOWNSCALE
        if tile_latent_min_size is not None:
            self.tile_latent_min_size = int(tile_latent_min_size)
        if tile_overlap is not None:
            self.tile_overlap = int(tile_overlap)
        try:
            self._sample_tiles()
        except ValueError:
            self.tile_sample_min_size, self.tile_latent_min_size, self.tile_overlap = before
            raise
        self.use_tiling = True

    def _sample_tiles(self) -> tuple[int, int]:
        """(tile, overlap) in px for encoding, checked."""
        tile = int(self.tile_sample_min_size)
        overlap = self.tile_overlap if self.tile_overlap is not None else _default_overlap(tile, self.tile_overlap_factor)
        if tile % DOWNSCALE or overlap % DOWNSCALE or not 0 <= overlap < tile:
            raise ValueError(f"tile size and overlap must be multiples of {DOWNSCALE} with 0 <= overlap < tile "
                             f"(got {tile}, {overlap})")
        return tile, overlap

    def _latent_tiles(self) -> tuple[int, int]:
        """(tile, overlap) in latent pixels for decoding."""
        tile = int(self.tile_latent_min_size)
        overlap = (self.tile_overlap // DOWNSCALE if self.tile_overlap is not None
                   else int(tile * self.tile_overlap_factor))
        return tile, min(overlap, max(tile - 1, 0))

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def enable_slicing(self) -> None:
        """Encode and decode a batch one sample at a time."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] -> moments [N, 2 * latent_channels, H / 8, W / 8]."""
        if self.use_tiling and max(x.shape[-2:]) > self.tile_sample_min_size:
            tile, overlap = self._sample_tiles()
            return tiled_map(lambda t: self.encoder(t).moments, x, tile, overlap, scale=Fraction(1, DOWNSCALE))[0]
        return self.encoder(x).moments

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and max(z.shape[-2:]) > self.tile_latent_min_size:
            tile, overlap = self._latent_tiles()
            return tiled_map(self.decoder, z, tile, overlap, scale=DOWNSCALE)[0]
        return self.decoder(z)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """-> AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution), or a 1-tuple."""
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode(s) for s in x.split(1)])
        else:
            moments = self._encode(x)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True, generator: Optional[torch.Generator] = None):
        """Latents [N, latent_channels, h, w] (unscaled: divide by scaling_factor first) -> DecoderOutput."""
        if self.use_slicing and z.shape[0] > 1:
            images = torch.cat([self._decode(s) for s in z.split(1)])
        else:
            images = self._decode(z)
        return DecoderOutput(sample=images) if return_dict else (images,)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False, return_dict: bool = True,
                generator: Optional[torch.Generator] = None):
        """Reconstruct: the posterior mode (or a sample) decoded."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)

    # ------------------------------------------------------------------------- conversions
    @classmethod
    def from_autoencoder(cls, ae: Autoencoder, **config) -> "LiteVAE":
        """A LiteVAE (on the CPU) holding a copy of `ae`'s weights, with extra config values (sample_size, ...)."""
        s = ae.spec
        vae = cls(encoder_type=s.encoder, decoder_type=s.decoder, latent_channels=s.nz,
                  encoder_kwargs=dict(s.encoder_kwargs), decoder_kwargs=dict(s.decoder_kwargs), **config)
        vae.load_state_dict(ae.state_dict())
        dtype = next(ae.parameters()).dtype
        return vae if dtype == vae.dtype else vae.to(dtype)

    def to_autoencoder(self) -> Autoencoder:
        """The same weights as the CLI's `models.Autoencoder` (shared modules, not a copy)."""
        return Autoencoder(self.encoder, self.decoder, self.spec)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, stats=None, use_ema: bool = True, **kwargs) -> "LiteVAE":
        """A diffusers folder (or Hub id: revision, subfolder, token, cache_dir as diffusers takes them), an
        export .safetensors, a checkpoint or a run folder (EMA weights when present and `use_ema`). `stats`: an
        encode-dataset stats.json (or its folder) whose sampled-latent factors become scaling_factor /
        shift_factor. Returns eval mode.
        A local file or folder is read by the CLI's own readers, with their checks (config types and
        factors, safetensors only, float weights of the config's shapes, no missing or unexpected tensor);
        any problem raises `ModelFileError` with the CLI's one-line message."""
        try:
            vae = cls._load(pretrained_model_name_or_path, use_ema, kwargs)
            if stats is not None:
                vae.set_latent_stats(stats)
        except ModelFileError:
            raise
        except UserError as err:
            raise ModelFileError(one_line(err, 10_000)) from None
        except (OSError, RuntimeError, TypeError, ValueError, KeyError) as err:  # a library's own, unforeseen
            raise ModelFileError(f"cannot load {pretrained_model_name_or_path}: {one_line(err, 200)}") from None
        return vae.eval()

    @classmethod
    def _load(cls, name, use_ema: bool, kwargs: dict) -> "LiteVAE":
        path = Path(name)
        folder = path / kwargs["subfolder"] if kwargs.get("subfolder") else path
        if not path.exists() and looks_like_hub_id(name):
            folder = _hub_folder(str(name), kwargs)  # then read as any local folder, with the same checks
        if is_diffusers_weights(folder):
            folder = folder.parent  # a LiteVAE folder's weights file: its folder (an AutoencoderKL's: refused)
        if folder.is_dir() and ((folder / CONFIG_NAME).is_file() or (folder / WEIGHTS_NAME).is_file()):
            if kwargs.get("variant"):
                raise UserError(f"{folder}: variant {kwargs['variant']!r} is not read (a litevae folder holds one "
                                f"{WEIGHTS_NAME})")
            config = read_config(folder) if (folder / CONFIG_NAME).is_file() else {}
            loaded = load_autoencoder(folder, use_ema=use_ema)  # the CLI's reader: every check the CLI makes
            keep = {k: config[k] for k in _KEPT_CONFIG if config.get(k) is not None}
            vae = cls.from_autoencoder(loaded.model, **keep)
        else:
            loaded = load_autoencoder(path, use_ema=use_ema)
            config = {k: kwargs[k] for k in ("sample_size", "scaling_factor", "shift_factor") if k in kwargs}
            config = {"sample_size": training_resolution(loaded), **config}
            vae = cls.from_autoencoder(loaded.model, source={"step": loaded.step, "ema": loaded.used_ema}, **config)
        if kwargs.get("torch_dtype") is not None:
            vae = vae.to(kwargs["torch_dtype"])
        return vae

    def set_latent_stats(self, stats) -> None:
        """scaling_factor / shift_factor <- the sampled-latent factors of an encode-dataset stats.json (a path to
        it or its folder, or its dict). A stats.json of another model's latents is refused (latent channels)."""
        scale, shift = latent_stats_factors(stats, self.config.latent_channels)
        self.register_to_config(scaling_factor=scale, shift_factor=shift)


def training_resolution(loaded) -> int:
    """The training resolution of a loaded model (its run's data.resolution), else DEFAULT_SAMPLE_SIZE."""
    return int(((loaded.config or {}).get("data") or {}).get("resolution") or DEFAULT_SAMPLE_SIZE)


def _default_overlap(tile: int, factor: float = TILE_OVERLAP_FACTOR) -> int:
    return int(tile * factor) // DOWNSCALE * DOWNSCALE


# diffusers' from_pretrained arguments that say where a Hub folder's files come from (hf_hub_download's).
_HUB_KWARGS = ("subfolder", "revision", "cache_dir", "token", "local_files_only", "force_download")


def _hub_folder(repo_id: str, kwargs: dict) -> Path:
    """A Hub repository's LiteVAE config.json and weights, fetched into the Hugging Face cache as diffusers
    fetches them (same cache, revision, token, subfolder); returns the local folder that holds both."""
    from huggingface_hub import hf_hub_download

    if kwargs.get("use_auth_token") is not None:
        kwargs.setdefault("token", kwargs["use_auth_token"])
    hub = {k: kwargs[k] for k in _HUB_KWARGS if kwargs.get(k) is not None}
    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME, **hub))
    except Exception as err:  # not found, offline, no access: huggingface_hub's many error types
        raise UserError(f"model not found: {repo_id} is no local path, and as a Hugging Face Hub id: "
                        f"{one_line(err, 200)}") from None
    read_config(config.parent)  # another model's repository: one line before the weights are fetched
    try:
        hf_hub_download(repo_id, WEIGHTS_NAME, **hub)
    except Exception as err:
        raise UserError(f"{repo_id} has no {WEIGHTS_NAME} on the Hub (only safetensors weights are read): "
                        f"{one_line(err, 200)}") from None
    return config.parent


def load(path, **kwargs) -> LiteVAE:
    """`litevae_cli.load(path)`: any trained LiteVAE (run folder, checkpoint, export, diffusers folder) as a
    diffusers `LiteVAE`, in eval mode. Same arguments as `LiteVAE.from_pretrained`."""
    return LiteVAE.from_pretrained(path, **kwargs)
