"""Config validation: dict -> dataclass with type checks, then table-driven value checks.

Types come from the schema's annotations (`_check_type`); value constraints from `_ENUMS`, `_MINIMA`,
`_MAXIMA_EXCL`, `_MAXIMA` (each with its reason), `_LENGTHS` and `_REGISTRY_KINDS`; where the model comes
from, per phase, from `_check_phase_model`; whether the model fits its data, from `config.model_check`
(built on the meta device). Every number anywhere in a config, builder kwargs included, is finite and
fits int64. Every problem is a `UserError` naming the dotted key and where its value came from.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import re
import typing
from typing import Any, Callable, Union

from litevae_cli.config.schema import ADV_KINDS, LPIPS_NETS, PHASES, Config
from litevae_cli.errors import UserError
from litevae_cli.model_spec import TRAINABLE

# -------------------- Constraint tables (dotted key -> rule)

_ENUMS: dict[str, tuple] = {
    "phase": PHASES,
    "discriminator.loss": ADV_KINDS,
    "loss.lpips_net": LPIPS_NETS,
    "loss.lpips_precision": ("fp32", "bf16", "auto"),
    "runtime.channels_last": ("auto", "on", "off"),
    "runtime.cudnn_benchmark": ("auto", "on", "off"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.trainable": TRAINABLE,
    "distill.logvar_loss": ("kl", "nll"),
}
_ON_OFF_KEYS = {"runtime.channels_last", "runtime.cudnn_benchmark"}  # auto | on | off
# Inclusive lower bounds; for lists, every element.
_MINIMA: dict[str, float] = {
    "model.nz": 1, "discriminator.start_step": 0,
    "data.rescale": 1e-6, "data.workers": 0, "train.seed": 0,
    "optim.lr": 0.0, "optim.betas": 0.0, "optim.weight_decay": 0.0, "optim.disc_lr": 0.0, "optim.disc_betas": 0.0,
    "optim.smc_gain_lr_mult": 0.0,
    "loss.l1": 0.0, "loss.lpips": 0.0, "loss.kl": 0.0, "loss.wavelet": 0.0, "loss.gaussian": 0.0,
    "loss.adversarial": 0.0, "train.keep_checkpoints": 0,
    "train.steps": 1, "train.batch_size": 1, "train.grad_accum": 1, "train.ema_decay": 0.0,
    "train.max_nonfinite": 1, "log.every": 1, "log.sample_every": 1, "log.checkpoint_every": 1,
    "distill.mean": 0.0, "distill.logvar": 0.0, "train.batch_per_gpu": 1, "runtime.dist_timeout_s": 1.0,
}
# Inclusive upper bounds and why: past them a value is a typo or a run that runs away (issue 25: a
# 1000000 px resolution took 9.4 GB before its first step), never a recipe.
_STEPS_WHY = "a billion steps is years of training at 10 steps/s"
_WEIGHT_WHY = "the recipe's loss weights are at most 1; a weight 1000x that drowns every other term"
_LR_WHY = "Adam diverges far below that; the recipe uses 1e-4"
_MAXIMA: dict[str, tuple[float, str]] = {
    # 8192 px is 16x the 512 px crops of the largest published VAE recipes (SD-VAE); one 8192 px crop
    # already holds 8 GB of activations per 128-channel decoder level in fp32.
    "data.resolution": (8192, "16x the largest published VAE training crop; one such crop needs ~8 GB per "
                              "decoder activation"),
    "data.rescale": (4.0, "a source enlarged 4x costs 16x its pixels and adds no detail"),
    "train.steps": (10**9, _STEPS_WHY), "discriminator.start_step": (10**9, _STEPS_WHY),
    "log.every": (10**9, _STEPS_WHY), "log.sample_every": (10**9, _STEPS_WHY),
    "log.checkpoint_every": (10**9, _STEPS_WHY), "train.max_nonfinite": (10**9, _STEPS_WHY),
    "train.keep_checkpoints": (10**6, "a million checkpoints is no retention policy"),
    # Published VAE recipes use global batches of 16-256; 65536 images per step is a typo.
    "train.batch_size": (65536, "published VAE recipes use 16-256 images per step"),
    "train.grad_accum": (65536, "at most one micro-batch per image of train.batch_size's maximum"),
    "train.batch_per_gpu": (65536, "published VAE recipes use 16-256 images per step in all"),
    "optim.lr": (1.0, _LR_WHY), "optim.disc_lr": (1.0, _LR_WHY),
    "optim.weight_decay": (1.0, "decoupled weight decay of 1 zeroes the weights each step"),
    "optim.smc_gain_lr_mult": (1000.0, "the demo's 10x already moves the SMC gains fast; 1000x diverges"),
    **{f"loss.{k}": (1000.0, _WEIGHT_WHY) for k in ("l1", "lpips", "kl", "wavelet", "gaussian", "adversarial")},
    "distill.mean": (1000.0, _WEIGHT_WHY), "distill.logvar": (1000.0, _WEIGHT_WHY),
}
_INT64 = 2**63  # every integer in a config must fit a torch int64 (step counters, seeds, RNG offsets)
# Exclusive upper bounds.
_MAXIMA_EXCL: dict[str, float] = {"optim.betas": 1.0, "optim.disc_betas": 1.0, "train.ema_decay": 1.0,
                                   "train.seed": 2**63}  # torch.manual_seed(seed + rank) takes < 2**64
_LENGTHS: dict[str, int] = {"data.rescale": 2, "optim.betas": 2, "optim.disc_betas": 2}
# Registry-name keys -> (the kind they must be, the dotted key of their builder kwargs).
_REGISTRY_KINDS: dict[str, tuple[str, str]] = {
    "model.encoder": ("encoder", "model.encoder_kwargs"),
    "model.decoder": ("decoder", "model.decoder_kwargs"),
    "discriminator.name": ("discriminator", "discriminator.kwargs"),
}
# Builder arguments set elsewhere in the schema, so a kwargs dict must not repeat them.
_RESERVED_KWARGS: dict[str, str] = {"nz": "model.nz"}


# -------------------- Dict -> dataclass with type checks


_SCI_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def max_workers() -> int:
    """The most loader workers per rank: 4 per CPU core here (more only contend for the cores, and each
    worker process holds its own copy of the dataset index), but at least 32 so that a preset written for
    a bigger machine still resolves on a laptop (`--dry-run`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(4 * cores, 32)


Where = Callable[[str], str]  # dotted key -> " (in <where its value came from>)" or ""


def _where(source: str) -> str:
    return f" (in {source})" if source else ""


class _Sources:
    """Where each key's value came from: `default` (the preset file) unless --set or a flag gave it
    (to the key itself, to a section above it, or, for a section, to a key inside it)."""

    def __init__(self, default: str):
        self.default, self.given = default, {}

    def __call__(self, key: str) -> str:
        key = key.split("[")[0]
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in self.given:
                return _where(self.given[".".join(parts[:i])])
        inside = [src for k, src in self.given.items() if k.startswith(key + ".")]
        return _where(inside[0] if inside else self.default)


def _check_type(value: Any, tp: Any, key: str, where: Where) -> Any:
    """`value` checked against annotation `tp` (and lightly coerced: int -> float); else UserError."""
    origin = typing.get_origin(tp)
    if origin is Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_type(value, args[0], key, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) and abs(value) >= 2**1024:  # float() of it overflows
            value = math.inf if value > 0 else -math.inf
        if not math.isfinite(value):
            raise UserError(f"config key '{key}' must be a finite number, got {value!r}{where(key)}")
        return float(value)
    if tp is float and isinstance(value, str) and _SCI_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string; accept it as the number it means.
        return _check_type(float(value), tp, key, where)
    if tp in (int, str, bool) and type(value) is tp:
        return _check_numbers(value, key, where)
    if tp is str and isinstance(value, bool) and key in _ON_OFF_KEYS:
        return "on" if value else "off"  # YAML 1.1 (PyYAML) reads an unquoted on / off as a boolean
    if (origin is list or tp is list) and isinstance(value, (list, tuple)):
        (elem,) = typing.get_args(tp) or (Any,)
        return [_check_numbers(v, f"{key}[{i}]", where) if elem is Any else _check_type(v, elem, f"{key}[{i}]", where)
                for i, v in enumerate(value)]
    if (origin is dict or tp is dict) and isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise UserError(f"config key '{key}' needs string keys, got {bad[0]!r}{where(key)}")
        return copy.deepcopy(_check_numbers(value, key, where))
    name = getattr(tp, "__name__", str(tp))
    if origin is not None:
        name = str(tp)
    raise UserError(f"config key '{key}' must be {name}, got {type(value).__name__} {value!r}{where(key)}")


def _check_numbers(value: Any, key: str, where: Where) -> Any:
    """`value` (any plain data, e.g. builder kwargs) with only finite floats and int64 integers, else a
    UserError; a string YAML 1.1 left unparsed (`1e-4`, no dot) becomes the float it means, as for typed keys."""
    if isinstance(value, str) and "e" in value.lower() and _SCI_FLOAT.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key '{key}' must be a finite number, got {value!r}{where(key)}")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise UserError(f"config key '{key}' must fit a 64-bit integer, got {value}{where(key)}")
    if isinstance(value, dict):
        return {k: _check_numbers(v, f"{key}.{k}", where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_check_numbers(v, f"{key}[{i}]", where) for i, v in enumerate(value))
    return value


def _build(cls: type, data: Any, prefix: str, where: Where) -> Any:
    """Instantiate dataclass `cls` from a dict: unknown keys, missing required keys and wrong types are errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        what = f"config section '{prefix}'" if prefix else "a config"
        raise UserError(f"{what} must be a mapping, got {type(data).__name__}{where(prefix)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            dotted = f"{prefix}.{k}" if prefix else str(k)
            raise UserError(f"unknown config key '{dotted}'{where(dotted)}; known keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _check_type(data[name], hints[name], dotted, where)
        elif dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], {}, dotted, where)  # a missing section takes its defaults
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"missing config key '{dotted}'{where(dotted)}")
    return cls(**kwargs)


# -------------------- Value checks


def _get(cfg: Config, dotted: str) -> Any:
    """The value at a dotted key; None below a section that is null (`model: null`)."""
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part) if obj is not None else None
    return obj


def _validate(cfg: Config, where: Where) -> Config:
    for key, allowed in _ENUMS.items():
        if _get(cfg, key) not in allowed:
            raise UserError(f"config key '{key}' must be one of {', '.join(allowed)}, got {_get(cfg, key)!r}{where(key)}")
    for key, length in _LENGTHS.items():
        if len(_get(cfg, key)) != length:
            raise UserError(f"config key '{key}' needs {length} values, got {_get(cfg, key)!r}{where(key)}")
    for table, fails, rule in ((_MINIMA, lambda v, lo: v < lo, ">="), (_MAXIMA_EXCL, lambda v, hi: v >= hi, "<")):
        for key, bound in table.items():
            value = _get(cfg, key)
            if any(v is not None and fails(v, bound) for v in (value if isinstance(value, list) else [value])):
                raise UserError(f"config key '{key}' must be {rule} {bound}, got {value!r}{where(key)}")
    workers = (max_workers(), "4 x the CPU cores here, 32 at least: more workers only contend for the cores")
    for key, (bound, why) in {**_MAXIMA, "data.workers": workers}.items():
        value = _get(cfg, key)
        if any(v is not None and v > bound for v in (value if isinstance(value, list) else [value])):
            shown = bound if isinstance(bound, int) else format(bound, "g")
            raise UserError(f"config key '{key}' must be <= {shown}, got {value!r}{where(key)}: {why}")
    if cfg.train.batch_per_gpu is None and cfg.train.batch_size % cfg.train.grad_accum:
        raise UserError(f"config key 'train.grad_accum' ({cfg.train.grad_accum}) must divide train.batch_size "
                        f"({cfg.train.batch_size}){where('train.grad_accum')}")
    if cfg.train.batch_per_gpu is not None and "train.batch_size" in getattr(where, "given", {}):
        per_gpu = f"train.batch_per_gpu={cfg.train.batch_per_gpu}{where('train.batch_per_gpu')}"
        raise UserError(f"train.batch_size{where('train.batch_size')} and {per_gpu} both set: give one "
                        "(--set train.batch_per_gpu=null to use a global batch)")
    lo, hi = cfg.data.rescale
    if lo > hi:
        raise UserError(f"config key 'data.rescale' must be [low, high] with low <= high, got {cfg.data.rescale}"
                        f"{where('data.rescale')}")
    from litevae_cli.data import check_side  # lazy: the data layer imports torch

    check_side(cfg.data.resolution, f"config key 'data.resolution'{where('data.resolution')}")
    for key, (kind, kwargs_key) in _REGISTRY_KINDS.items():
        name = _get(cfg, key)
        if name is not None:
            _check_registry(name, kind, key, _get(cfg, kwargs_key), kwargs_key, where)
    _check_phase_model(cfg, where)
    from litevae_cli.config.model_check import check_model_fits  # lazy: builds on the meta device with torch

    check_model_fits(cfg, where)
    return cfg


def _check_phase_model(cfg: Config, where: Where) -> None:
    """Where the model comes from, per phase: pretrain builds `model`; finetune takes it from the preset or,
    with `model: null`, from --from; distill derives it (student encoder + teacher decoder, training.distill)."""
    if cfg.phase == "pretrain" and cfg.model is None:
        raise UserError(f"config key 'model' must describe the model to pretrain, got null{where('model')}")
    if cfg.phase != "distill":
        return
    if cfg.model is not None:
        raise UserError(f"config key 'model' must be null for distill (the model is the student encoder + the "
                        f"teacher's decoder){where('model')}")
    if cfg.train.trainable != "encoder" or cfg.discriminator.name is not None:
        raise UserError(f"a distill preset trains the encoder alone (train.trainable: encoder) with no "
                        f"discriminator{where('train.trainable')}")
    from litevae_cli.models import get_entry  # lazy: importing the registry imports torch

    try:
        entry = get_entry(cfg.distill.student)
    except KeyError:
        return  # not a registry name: a MODEL path, checked when the run starts
    if entry.kind != "encoder":
        raise UserError(f"config key 'distill.student': {cfg.distill.student!r} is a registered {entry.kind}, "
                        f"not an encoder{where('distill.student')}")
    _check_registry(cfg.distill.student, "encoder", "distill.student", cfg.distill.student_kwargs,
                    "distill.student_kwargs", where)


def _check_registry(name: str, kind: str, key: str, kwargs: dict, kwargs_key: str, where: Where) -> None:
    """`name` is a registered `kind` and `kwargs` are arguments its builder accepts."""
    from litevae_cli.models import get_entry, list_models  # lazy: importing the registry imports torch

    try:
        entry = get_entry(name)
    except KeyError:
        known = ", ".join(list_models(kind))
        raise UserError(f"config key '{key}': unknown {kind} {name!r}{where(key)}; registered {kind}s: {known}") from None
    if entry.kind != kind:
        raise UserError(f"config key '{key}': {name!r} is a registered {entry.kind}, not a {kind}{where(key)}")
    params = inspect.signature(entry.builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for arg in kwargs:
        w = where(f"{kwargs_key}.{arg}")
        if arg in _RESERVED_KWARGS and arg in params:
            raise UserError(f"config key '{kwargs_key}.{arg}' is not allowed{w}; set {_RESERVED_KWARGS[arg]} instead")
        if not takes_any and arg not in params:
            accepted = ", ".join(p for p in params if p not in _RESERVED_KWARGS) or "none"
            raise UserError(f"unknown config key '{kwargs_key}.{arg}'{w}; {name} accepts: {accepted}")
