"""diffusers `AutoencoderKL` <-> the registry's SD-VAE family: config and weights, both ways (no diffusers import).

Every AutoencoderKL of the field (SD 1.x/2.x, SDXL, SD3, FLUX.1) is `sd-vae-encoder` + `sd-vae-decoder`:
  block_out_channels       channels x mults (each width an integer multiple of the first)
  layers_per_block         encoder blocks_per_level; the decoder's is layers_per_block + 1
  norm_num_groups          norm_groups (it must divide every width)
  use_quant_conv           the encoder's quant_conv (1x1, 2nz -> 2nz, applied last)
  use_post_quant_conv      the decoder's post_quant_conv (1x1, nz -> nz, applied first)
  mid_block_add_attention  mid_attention, in both
  latent_channels          nz
The latent space's published normalisation (`FACTOR_KEYS`: scaling_factor, shift_factor, latents_mean,
latents_std, force_upcast) goes to `ModelSpec.latent_factors` as the config states it (diffusers' defaults
filled in) and back on export; so does sample_size (diffusers' tile size), so that a round trip gives
the same config. Anything else AutoencoderKL accepts (other block types, act_fn other than
silu, in/out channels other than 3) is a one-line UserError naming the key; so are factors that are not
finite numbers in range (`check_kept`, `latents.stats.check_factor`), read or about to be written.

Weights: the same tensors under other names; attention's to_q/to_k/to_v/to_out.0 are Linear [C, C] in
diffusers and 1x1 convs [C, C, 1, 1] here. The names of diffusers' pre-0.14 attention (query, key, value,
proj_attn) are read too, as diffusers reads them.
The folder on disk (config.json + diffusion_pytorch_model.safetensors) is `litevae_cli.files.diffusers_folder`'s.
"""

from __future__ import annotations

import inspect
import math

from litevae_cli.errors import UserError
from litevae_cli.latents.stats import check_factor, check_factors
from litevae_cli.model_spec import ModelSpec

CLASS_NAME = "AutoencoderKL"
ENCODER, DECODER = "sd-vae-encoder", "sd-vae-decoder"
DOWN_BLOCK, UP_BLOCK = "DownEncoderBlock2D", "UpDecoderBlock2D"
FACTOR_KEYS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std", "force_upcast")
KEPT_KEYS = (*FACTOR_KEYS, "sample_size")  # what ModelSpec.latent_factors keeps of an imported config
# AutoencoderKL.__init__'s defaults (diffusers 0.42; tests/test_autoencoder_kl.py compares them to diffusers').
DEFAULTS = {"in_channels": 3, "out_channels": 3, "down_block_types": [DOWN_BLOCK], "up_block_types": [UP_BLOCK],
            "block_out_channels": [64], "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4,
            "norm_num_groups": 32, "sample_size": 32, "scaling_factor": 0.18215, "shift_factor": None,
            "latents_mean": None, "latents_std": None, "force_upcast": True, "use_quant_conv": True,
            "use_post_quant_conv": True, "mid_block_add_attention": True}
# Exports of models trained here without known factors: the identity, as LiteVAE's defaults.
IDENTITY_FACTORS = {"scaling_factor": 1.0, "shift_factor": 0.0}
_FIXED = {"in_channels": 3, "out_channels": 3, "act_fn": "silu"}  # the only values the registry's models take
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "skip": "conv_shortcut"}
_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


# ----------------------------------------------------------------------------------------- config <-> spec
def spec_from_config(config: dict, source: str = CLASS_NAME) -> ModelSpec:
    """An AutoencoderKL config.json (dict) -> the ModelSpec of the same architecture and latent factors."""
    unknown = sorted(k for k in config if not k.startswith("_") and k not in DEFAULTS)
    if unknown:
        raise UserError(f"{source}: unsupported {CLASS_NAME} config key {unknown[0]!r}")
    c = {**DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}
    for key, want in _FIXED.items():
        if c[key] != want:
            raise UserError(f"{source}: unsupported {key} {c[key]!r} (litevae's SD-VAE models take {want!r})")
    widths = c["block_out_channels"]
    if not isinstance(widths, (list, tuple)) or not widths or not all(_positive_int(w) for w in widths):
        raise UserError(f"{source}: block_out_channels must be a list of positive integers, got {widths!r}")
    for key, block in (("down_block_types", DOWN_BLOCK), ("up_block_types", UP_BLOCK)):
        types = c[key]
        if not isinstance(types, (list, tuple)) or len(types) != len(widths) or any(t != block for t in types):
            raise UserError(f"{source}: unsupported {key} {types!r} (one {block} per block_out_channels entry)")
    for key in ("layers_per_block", "latent_channels", "norm_num_groups"):
        if not _positive_int(c[key]):
            raise UserError(f"{source}: {key} must be a positive integer, got {c[key]!r}")
    for key in ("use_quant_conv", "use_post_quant_conv", "mid_block_add_attention", "force_upcast"):
        if not isinstance(c[key], bool):
            raise UserError(f"{source}: {key} must be true or false, got {c[key]!r}")
    if any(w % widths[0] for w in widths):
        raise UserError(f"{source}: block_out_channels {list(widths)} are not integer multiples of the first "
                        f"width (litevae's SD-VAE models are channels x mults)")
    groups = c["norm_num_groups"]
    if any(w % groups for w in widths):
        raise UserError(f"{source}: norm_num_groups {groups} does not divide every block_out_channels {list(widths)}")
    check_kept(c, source)
    shared = {"channels": widths[0], "mults": [w // widths[0] for w in widths],
              "mid_attention": c["mid_block_add_attention"], "norm_groups": groups}
    encoder = {**shared, "blocks_per_level": c["layers_per_block"], "quant_conv": c["use_quant_conv"]}
    decoder = {**shared, "blocks_per_level": c["layers_per_block"] + 1, "post_quant_conv": c["use_post_quant_conv"]}
    return ModelSpec(ENCODER, DECODER, c["latent_channels"], encoder, decoder,
                     latent_factors={k: c[k] for k in KEPT_KEYS})


MAX_SAMPLE_SIZE = 1 << 16  # px: diffusers' tile size; past it the config is broken, not a large tile


def check_kept(config: dict, source: str) -> None:
    """The latent factors and sample_size of an AutoencoderKL config (`KEPT_KEYS`, defaults filled in):
    finite numbers in range, latents_mean/std one per latent channel; else a one-line UserError."""
    check_factor(config["scaling_factor"], "scaling_factor", source, scale=True)
    if config["shift_factor"] is not None:
        check_factor(config["shift_factor"], "shift_factor", source)
    for key in ("latents_mean", "latents_std"):
        if config[key] is not None:
            check_factors(config[key], key, source, scale=key == "latents_std", channels=config["latent_channels"])
    size = config["sample_size"]
    sides = size if isinstance(size, (list, tuple)) and len(size) == 2 else [size]
    if not all(_positive_int(v) and v <= MAX_SAMPLE_SIZE for v in sides):
        raise UserError(f"{source}: sample_size must be a positive integer (or two) up to {MAX_SAMPLE_SIZE}, "
                        f"got {size!r}")


def config_from_spec(spec: ModelSpec, sample_size: int = DEFAULTS["sample_size"], check: bool = True) -> dict:
    """The AutoencoderKL config (without `_class_name`) of an sd-vae-encoder + sd-vae-decoder spec, with its
    latent factors (the identity where none are known) and sample_size (the spec's, else `sample_size`);
    a UserError says why a spec has none. `check`: the factors too (`check_kept`), else the shape only."""
    enc, dec = _builder_kwargs(spec)
    for key in ("channels", "mults", "mid_attention", "norm_groups"):
        if enc[key] != dec[key]:
            raise UserError(f"the encoder's {key} {enc[key]!r} differs from the decoder's {dec[key]!r}; "
                            f"an {CLASS_NAME} shares it")
    if dec["blocks_per_level"] != enc["blocks_per_level"] + 1:
        raise UserError(f"an {CLASS_NAME} decoder has one block per level more than its encoder; these have "
                        f"{enc['blocks_per_level']} and {dec['blocks_per_level']}")
    widths = [enc["channels"] * m for m in enc["mults"]]
    groups = enc["norm_groups"]
    if any(math.gcd(groups, w) != groups for w in widths):  # the models take gcd(norm_groups, width) groups
        raise UserError(f"norm_groups {groups} does not divide every width {widths}; {CLASS_NAME} needs it to")
    factors = {**DEFAULTS, **IDENTITY_FACTORS, "sample_size": sample_size,
               **{k: v for k, v in spec.latent_factors.items() if k in KEPT_KEYS}}
    config = {**DEFAULTS, "down_block_types": [DOWN_BLOCK] * len(widths), "up_block_types": [UP_BLOCK] * len(widths),
              "block_out_channels": widths, "layers_per_block": enc["blocks_per_level"], "latent_channels": spec.nz,
              "norm_num_groups": groups, "use_quant_conv": enc["quant_conv"],
              "use_post_quant_conv": dec["post_quant_conv"], "mid_block_add_attention": enc["mid_attention"],
              **{k: factors[k] for k in KEPT_KEYS}}
    if check:  # never write a NaN into config.json
        check_kept(config, f"the latent factors of {spec.describe()}")
    return config


def represents(spec: ModelSpec) -> bool:
    """Whether `spec` is an AutoencoderKL architecture (`config_from_spec` succeeds)."""
    try:
        config_from_spec(spec, check=False)
    except UserError:
        return False
    return True


def _builder_kwargs(spec: ModelSpec) -> tuple[dict, dict]:
    """The encoder's and decoder's builder arguments, defaults filled in from the registered builders."""
    from litevae_cli.models import get_entry

    if (spec.encoder, spec.decoder) != (ENCODER, DECODER):
        raise UserError(f"an {CLASS_NAME} is {ENCODER} + {DECODER}, not {spec.encoder} + {spec.decoder}")
    out = []
    for name, kwargs in ((spec.encoder, spec.encoder_kwargs), (spec.decoder, spec.decoder_kwargs)):
        params = inspect.signature(get_entry(name).builder).parameters
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise UserError(f"{name} takes no {unknown[0]!r}")
        full = {k: p.default for k, p in params.items() if k != "nz"}
        full.update(kwargs)
        full["mults"] = list(full["mults"])
        out.append(full)
    return out[0], out[1]


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


# ----------------------------------------------------------------------------------------- weights
def key_map(spec: ModelSpec) -> dict[str, str]:
    """Our state_dict key -> diffusers' key, for every tensor of the model `spec` builds (an AutoencoderKL)."""
    enc, dec = _builder_kwargs(spec)
    config_from_spec(spec, check=False)  # the shape checks
    widths = [enc["channels"] * m for m in enc["mults"]]
    names: dict[str, str] = {}

    def module(ours: str, theirs: str) -> None:
        names[f"{ours}.weight"], names[f"{ours}.bias"] = f"{theirs}.weight", f"{theirs}.bias"

    def resnet(ours: str, theirs: str, cin: int, cout: int) -> None:
        for a, b in _RESNET.items():
            if a != "skip" or cin != cout:
                module(f"{ours}.{a}", f"{theirs}.{b}")

    def mid(ours: str, theirs: str, ch: int, attention: bool) -> None:
        resnet(f"{ours}.0", f"{theirs}.resnets.0", ch, ch)
        if attention:
            for a, b in _ATTENTION.items():
                module(f"{ours}.1.{a}", f"{theirs}.attentions.0.{b}")
        resnet(f"{ours}.{2 if attention else 1}", f"{theirs}.resnets.1", ch, ch)

    def levels(part: str, seq: str, blocks: str, resample: str, level_widths: list[int], per_level: int) -> None:
        k, ch = 0, level_widths[0]
        for i, width in enumerate(level_widths):
            for j in range(per_level):
                resnet(f"{part}.{seq}.{k}", f"{part}.{blocks}.{i}.resnets.{j}", ch, width)
                k, ch = k + 1, width
            if i != len(level_widths) - 1:
                module(f"{part}.{seq}.{k}.conv", f"{part}.{blocks}.{i}.{resample}.0.conv")
                k += 1

    for part in ("encoder", "decoder"):
        for a, b in (("conv_in", "conv_in"), ("norm_out", "conv_norm_out"), ("conv_out", "conv_out")):
            module(f"{part}.{a}", f"{part}.{b}")
        mid(f"{part}.mid", f"{part}.mid_block", widths[-1], enc["mid_attention"])
    if enc["quant_conv"]:
        module("encoder.quant_conv", "quant_conv")
    if dec["post_quant_conv"]:
        module("decoder.post_quant_conv", "post_quant_conv")
    levels("encoder", "down", "down_blocks", "downsamplers", widths, enc["blocks_per_level"])
    # diffusers' up_blocks.0 is the deepest level, as our decoder's first
    levels("decoder", "up", "up_blocks", "upsamplers", widths[::-1], dec["blocks_per_level"])
    return names


def _is_attention_weight(theirs: str) -> bool:
    return ".attentions." in theirs and theirs.endswith(".weight") and ".group_norm." not in theirs


def state_from_diffusers(state: dict, spec: ModelSpec, source: str = CLASS_NAME) -> dict:
    """An AutoencoderKL state_dict -> ours for `spec` (same tensors, attention weights as 1x1 convs).
    Missing or unexpected tensors are one UserError naming one of each; shapes are checked on loading."""
    state = {_modern_name(k): v for k, v in state.items()}
    names = key_map(spec)
    missing = [t for t in names.values() if t not in state]
    unexpected = sorted(set(state) - set(names.values()))
    if missing or unexpected:
        raise UserError(f"the weights in {source} do not fit its config: "
                        + "; ".join(f"{n} {len(k)} tensor(s), e.g. {k[0]}"
                                    for n, k in (("missing", missing), ("unexpected", unexpected)) if k))
    return {ours: (state[t][..., None, None] if _is_attention_weight(t) and state[t].dim() == 2 else state[t])
            for ours, t in names.items()}


def state_to_diffusers(state: dict, spec: ModelSpec) -> dict:
    """Our state_dict of an AutoencoderKL-shaped spec -> AutoencoderKL's (attention weights as Linear)."""
    return {t: (state[ours].flatten(1) if _is_attention_weight(t) else state[ours]).contiguous()
            for ours, t in key_map(spec).items()}


def _modern_name(key: str) -> str:
    """diffusers' pre-0.14 attention names (query, key, value, proj_attn) -> today's (to_q, ..., to_out.0)."""
    head, _, param = key.rpartition(".")
    prefix, _, name = head.rpartition(".")
    if ".attentions." in key and name in _LEGACY_ATTENTION:
        return f"{prefix}.{_LEGACY_ATTENTION[name]}.{param}"
    return key
