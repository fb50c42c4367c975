"""The one training-config schema: preset lookup, YAML loading, `--set` overrides, validation, dump.

A preset is plain data (a YAML file) describing one training phase of LiteVAE (Sadat et al. 2024):
which registered encoder/decoder/discriminator, the data resolution, Adam settings, loss weights and
the loop's lengths. Everything a run uses is in `Config`; the loop writes it next to the run.

Rules (style: "one config schema; unknown keys are errors"):
- The schema is the dataclasses below. A preset may omit any key that has a default here; `name`
  defaults to the preset file's stem.
- The `model` section is a `ModelSpec` (`litevae_cli.model_spec`), the type checkpoints store too.
- `resolve_config` is the one pass: the preset file, then `--set` overrides, then the dedicated flags
  (`FLAG_KEYS`, which win), merged as plain data and validated ONCE, each key remembering where it
  came from; `phase` is checked against the subcommand there (the one statement of the phase).
- Validation is table-driven: types come from the dataclass annotations (`_check_type`), value
  constraints from `_ENUMS`, `_MINIMA`, `_LENGTHS` and `_REGISTRY_KINDS`. Every problem is a
  `UserError` naming the dotted key and where its value came from, e.g.
  "unknown config key 'train.stepz' (in --set)".
- Overrides are "key.sub=value" strings parsed with `yaml.safe_load` (`optim.betas=[0.9,0.99]` works).
- No torch at import time (`--help` stays fast): the registry is imported when a config is validated.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import inspect
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import yaml

from litevae_cli.errors import UserError
from litevae_cli.model_spec import TRAINABLE, ModelSpec

# The repo's top-level presets/ folder: the fallback when the package resource is unavailable
# (e.g. running from a source checkout without an install).
_REPO_PRESETS = Path(__file__).resolve().parent.parent / "presets"


# -------------------- Schema


@dataclass
class DiscriminatorCfg:
    name: Optional[str] = None  # registry name; None = no discriminator (phase A)
    kwargs: dict = field(default_factory=dict)  # overrides passed to the discriminator builder
    loss: str = "hinge"  # hinge (P Table 16 baseline) | non-saturating
    start_step: int = 0  # the adversarial term is on from this step


@dataclass
class DataCfg:
    resolution: int = 128  # square crop side in pixels
    rescale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # OL stochastic rescale range
    workers: int = 4  # DataLoader worker processes per rank


@dataclass
class OptimCfg:
    lr: float = 1e-4  # Adam (P App. F; OL)
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    weight_decay: float = 0.0
    disc_lr: float = 1e-4  # the discriminator uses the same settings (P App. F)
    disc_betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    smc_gain_lr_mult: float = 1.0  # lr x this for the SMC gains g and scales s (Eq. 3); 1 = P's single lr


@dataclass
class LossCfg:
    # Every term is a mean (reconstruction terms per pixel, KL per latent element): spec "Losses".
    l1: float = 1.0
    lpips: float = 1.0
    lpips_net: str = "alex"  # alex | vgg (the lpips package's backbones)
    kl: float = 1e-3  # from the KL sweep (BENCHMARKS.md "KL weight"); OL used 0.01
    wavelet: float = 1.0  # OL B runs
    gaussian: float = 0.5  # OL B runs
    adversarial: float = 0.1  # constant (P: no adaptive weight); P/OL do not publish it


@dataclass
class TrainCfg:
    steps: int  # optimizer steps of this phase
    batch_size: int = 16  # global batch (P: 16; OL: 32)
    grad_accum: int = 1  # micro-batches per optimizer step
    precision: str = "bf16"  # fp32 | bf16 | fp16 (autocast dtype)
    ema_decay: Optional[float] = None  # EMA of the autoencoder weights; None = off (OL default)
    ema_warmup: bool = True  # ramp the EMA decay up at the start (OL)
    seed: int = 0
    max_nonfinite: int = 20  # consecutive non-finite steps before stopping
    keep_checkpoints: int = 0  # numbered checkpoints kept, newest first (last.pt always); 0 = keep all
    trainable: str = "all"  # all | decoder (encoder frozen: the latent space stays) | encoder (distill)


@dataclass
class LogCfg:
    every: int = 100  # steps between status lines / scalars
    sample_every: int = 1000  # steps between reconstruction grids
    checkpoint_every: int = 2000  # steps between checkpoints
    tensorboard: bool = True


@dataclass
class DistillCfg:
    """`litevae distill`: a student encoder trained into a frozen teacher's latent space (training.distill)."""
    teacher: Optional[str] = None  # the teacher VAE (any MODEL, a diffusers AutoencoderKL folder too): --teacher
    student: str = "litevae-b"  # an encoder registry name, or a MODEL whose encoder starts the student: --student
    student_kwargs: dict = field(default_factory=dict)  # overrides passed to the student encoder's builder
    mean: float = 1.0  # weight of the squared error of posterior means, per channel over the teacher's latent std
    logvar: float = 0.1  # weight of the log-variance term
    logvar_loss: str = "kl"  # kl: KL of the variances alone | nll: NLL of a teacher sample, student mean detached


@dataclass
class Config:
    name: str
    phase: str  # pretrain | finetune | distill: the subcommand that runs it (finetune starts from --from CKPT)
    model: Optional[ModelSpec]  # null: the model of --from (finetune) or student + teacher decoder (distill)
    discriminator: DiscriminatorCfg
    data: DataCfg
    optim: OptimCfg
    loss: LossCfg
    train: TrainCfg
    log: LogCfg
    distill: DistillCfg


# -------------------- Constraint tables (dotted key -> rule)

PHASES = ("pretrain", "finetune", "distill")  # the subcommand that runs a preset
ADV_KINDS = ("hinge", "non-saturating")  # adversarial losses (training.losses)
LPIPS_NETS = ("alex", "vgg")  # the lpips package's backbones (metrics.weights)
_ENUMS: dict[str, tuple] = {
    "phase": PHASES,
    "discriminator.loss": ADV_KINDS,
    "loss.lpips_net": LPIPS_NETS,
    "train.precision": ("fp32", "bf16", "fp16"),
    "train.trainable": TRAINABLE,
    "distill.logvar_loss": ("kl", "nll"),
}
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
    "distill.mean": 0.0, "distill.logvar": 0.0,
}
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
# The dedicated flags of `pretrain` / `finetune` and the key each one sets (they win over --set).
FLAG_KEYS: dict[str, str] = {"--steps": "train.steps", "--batch-size": "train.batch_size",
                             "--precision": "train.precision", "--workers": "data.workers",
                             "--train": "train.trainable", "--teacher": "distill.teacher", "--student": "distill.student"}


# -------------------- Dict -> dataclass with type checks


_SCI_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


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
        if not math.isfinite(value):
            raise UserError(f"config key '{key}' must be a finite number, got {value!r}{where(key)}")
        return float(value)
    if tp is float and isinstance(value, str) and _SCI_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 (PyYAML) reads `1e-4` (no dot) as a string; accept it as the number it means.
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    if (origin is list or tp is list) and isinstance(value, (list, tuple)):
        (elem,) = typing.get_args(tp) or (Any,)
        return [v if elem is Any else _check_type(v, elem, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if (origin is dict or tp is dict) and isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise UserError(f"config key '{key}' needs string keys, got {bad[0]!r}{where(key)}")
        return copy.deepcopy(value)
    name = getattr(tp, "__name__", str(tp))
    if origin is not None:
        name = str(tp)
    raise UserError(f"config key '{key}' must be {name}, got {type(value).__name__} {value!r}{where(key)}")


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


# -------------------- Presets, overrides, loading, dumping


def _preset_dirs() -> list[Path]:
    dirs = []
    try:
        dirs.append(Path(str(importlib.resources.files("litevae_cli.presets"))))
    except (ModuleNotFoundError, TypeError):
        pass
    if _REPO_PRESETS not in dirs:
        dirs.append(_REPO_PRESETS)
    return [d for d in dirs if d.is_dir()]


def list_presets() -> list[str]:
    """Names of the shipped presets (YAML stems), sorted."""
    return sorted({p.stem for d in _preset_dirs() for p in d.glob("*.yaml")})


def _resolve_preset(preset: str) -> Path:
    path = Path(preset).expanduser()
    looks_like_path = path.suffix in (".yaml", ".yml") or "/" in preset or "\\" in preset
    if looks_like_path:
        if not path.is_file():
            raise UserError(f"preset file not found: {preset}")
        return path
    for d in _preset_dirs():
        if (d / f"{preset}.yaml").is_file():
            return d / f"{preset}.yaml"
    raise UserError(f"unknown preset {preset!r}; shipped presets: {', '.join(list_presets()) or 'none'} "
                    "(or give a path to a .yaml file)")


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"--set expects key.sub=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UserError(f"--set {key}: cannot parse value {raw!r} as YAML ({exc.__class__.__name__})") from None
    return key.split("."), value


def _set_path(data: dict, parts: list[str], value: Any) -> None:
    """Set data[p0][p1]... = value, creating intermediate mappings (the schema check comes after)."""
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise UserError(f"--set {'.'.join(parts)}: config key '{'.'.join(parts[:i + 1])}' is not a section")
        node = nxt
    node[parts[-1]] = value


def config_from_dict(data: dict, source: str = "") -> Config:
    """Build and validate a Config from a plain mapping (the inverse of `config_to_dict`)."""
    return _validate(_build(Config, data, "", lambda key: _where(source)), lambda key: _where(source))


def resolve_config(preset: str, overrides: Iterable[str] = (), flags: dict | None = None,
                   phase: str | None = None) -> Config:
    """The preset (a shipped name or a YAML path), then the `--set` overrides, then the dedicated flags
    (`FLAG_KEYS` -> value; None = not given), merged and validated once; an error names the key and
    where its value came from. `phase`: the subcommand, which must be the preset's phase."""
    path = _resolve_preset(str(preset))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse preset {path}: {str(exc).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"preset {path} must be a YAML mapping, got {type(data).__name__}")
    data.pop("run", None)  # a run's config.yaml records what produced it under `run:`; not part of a recipe
    data.setdefault("name", path.stem)
    where = _Sources(f"preset {path}")
    for item in overrides or ():
        parts, value = _parse_override(item)
        _set_path(data, parts, value)
        where.given[".".join(parts)] = "--set"
    for flag, value in (flags or {}).items():
        if value is not None:
            _set_path(data, FLAG_KEYS[flag].split("."), value)
            where.given[FLAG_KEYS[flag]] = flag
    cfg = _validate(_build(Config, data, "", where), where)
    if phase is not None and cfg.phase != phase:
        use = {"finetune": "`litevae finetune --from CKPT`", "distill": "`litevae distill --teacher VAE`"}.get(
            cfg.phase, "`litevae pretrain`")
        raise UserError(f"preset {cfg.name!r} is a {cfg.phase} preset (phase: {cfg.phase}), not for "
                        f"`litevae {phase}`: use {use}")
    return cfg


def load_config(preset: str, overrides: Iterable[str] = ()) -> Config:
    """A shipped preset by name or a YAML file by path, with `--set` overrides (`resolve_config`)."""
    return resolve_config(preset, overrides)


def config_to_dict(cfg: Config) -> dict:
    """A plain, YAML-safe nested dict of `cfg` (lists, not tuples)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config, path, run: dict | None = None) -> None:
    """Write `cfg` as YAML (key order as in the schema), then `run:` when given, to a path or an open text
    stream (--dry-run prints to stdout); `load_config(path)` reads it back."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    text += yaml.safe_dump({"run": run}, sort_keys=False) if run else ""
    if hasattr(path, "write"):
        path.write(text)
    else:
        Path(path).write_text(text)
