"""Whether a config's model fits its data, checked before any work (`--dry-run` included).

The model (and the discriminator) are built on torch's meta device, which allocates no memory and runs
no kernels, and run on one crop of `data.resolution`: architecture lists that do not fit (decoder
`mults` that upsample less than the encoder downsamples, channels that a norm's groups do not divide,
a discriminator that needs another crop size) are one line naming the config key, not a traceback
mid-run (issue 25). A model past `MAX_PARAMS` is refused too. Results are cached per architecture, so
resolving the same config twice costs one check (~0.2 s for litevae-b at 256 px).
"""

from __future__ import annotations

import functools
import json

from litevae_cli.errors import BUILD_ERRORS, UserError, one_line

# 2e9 parameters are 20x the largest published VAE (SD3/FLUX's ~84 M) and, with fp32 Adam state, 32 GB
# before the first activation: a config past it has a typo in its channels.
MAX_PARAMS = 2_000_000_000
_ERRORS = (*BUILD_ERRORS, AssertionError, OverflowError)  # what a builder or a forward raises on bad numbers


def check_model_fits(cfg, where) -> None:
    """UserError when `cfg.model` (and its discriminator) cannot be built or do not map a
    data.resolution crop to a reconstruction of the same size. No model (finetune with `model: null`,
    distill): the model comes from --from / --teacher and is checked when it is loaded."""
    if cfg.model is None:
        if cfg.phase == "distill" and cfg.distill.student_kwargs:
            problem = _student_problem(json.dumps([cfg.distill.student, cfg.distill.student_kwargs,
                                                   cfg.data.resolution], sort_keys=True))
            if problem is not None:
                raise UserError(f"config key 'distill.student_kwargs': {problem}{where('distill.student_kwargs')}")
        return
    arch = json.dumps([cfg.model.architecture(), cfg.data.resolution, cfg.discriminator.name,
                       cfg.discriminator.kwargs], sort_keys=True)
    problem = _problem(arch)
    if problem is not None:
        key, text = problem
        raise UserError(f"{text}{where(key)}")


@functools.lru_cache(maxsize=64)
def _problem(arch: str) -> tuple[str, str] | None:
    """(the config key at fault, why) for the architecture JSON of `check_model_fits`, or None."""
    import torch

    from litevae_cli.model_spec import ModelSpec
    from litevae_cli.models import create_autoencoder, create_model

    spec_dict, res, disc_name, disc_kwargs = json.loads(arch)
    spec = ModelSpec.from_dict(spec_dict)
    what = f"config model ({spec.describe()})"  # as training.state names it when the real build fails
    with torch.device("meta"), torch.no_grad():
        try:
            model = create_autoencoder(spec)
        except _ERRORS as err:
            return "model", f"{what} cannot be built: {one_line(err, 200)}"
        params = sum(p.numel() for p in model.parameters())
        if params > MAX_PARAMS:
            return "model", (f"{what} has {params / 1e9:.1f} billion parameters: at most {MAX_PARAMS / 1e9:g} "
                             "billion (20x the largest published VAE; 32 GB of fp32 weights and Adam state)")
        try:
            recon, _ = model(torch.empty(1, 3, res, res), sample_posterior=False)
        except NotImplementedError:  # an op without a meta kernel: the real build checks it at the start
            return None
        except _ERRORS as err:
            return "model", f"{what} cannot run on a {res}x{res} crop (data.resolution): {one_line(err, 200)}"
        if tuple(recon.shape) != (1, 3, res, res):
            return "model", (f"{what} turns a {res}x{res} crop (data.resolution) into a "
                             f"{'x'.join(map(str, recon.shape[2:]))} reconstruction with {recon.shape[1]} channels; "
                             "the decoder must upsample exactly as much as the encoder downsamples")
        if disc_name is None:
            return None
        try:
            disc = create_model(disc_name, **disc_kwargs)
            side = getattr(disc, "downscale", 1)
            if res % side:
                return "discriminator", (f"config discriminator {disc_name} needs data.resolution to be a multiple of "
                                     f"{side}, got {res}")
            disc(recon)
        except NotImplementedError:
            return None
        except _ERRORS as err:
            return "discriminator", (f"config discriminator {disc_name} {disc_kwargs} cannot judge a {res}x{res} "
                                     f"reconstruction: {one_line(err, 200)}")
    return None


@functools.lru_cache(maxsize=16)
def _student_problem(arch: str) -> str | None:
    """Why a distill student (a registered encoder with student_kwargs; its nz comes from the teacher,
    so the builder's default stands in) cannot encode a data.resolution crop, or None."""
    import torch

    from litevae_cli.models import create_model, get_entry

    name, kwargs, res = json.loads(arch)
    try:
        get_entry(name)
    except KeyError:
        return None  # a MODEL path: its encoder is checked when it is loaded
    with torch.device("meta"), torch.no_grad():
        try:
            create_model(name, **kwargs)(torch.empty(1, 3, res, res))
        except NotImplementedError:
            return None
        except _ERRORS as err:
            return f"{name} {kwargs} cannot encode a {res}x{res} crop: {one_line(err, 200)}"
    return None
