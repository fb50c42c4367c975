"""Presets and their resolution: lookup by name or path, `--set` overrides, the dedicated flags, load and dump.

`resolve_config` is the one pass: the preset file, then `--set` overrides, then the dedicated flags
(`FLAG_KEYS`, which win), merged as plain data and validated once (`config.checks`), each key remembering
where it came from; `phase` is checked against the subcommand there.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from litevae_cli.config.checks import _build, _Sources, _validate, _where
from litevae_cli.config.schema import Config
from litevae_cli.errors import UserError
from litevae_cli.files.atomic import write_text as atomic_write_text

# The repo's top-level presets/ folder: the fallback when the package resource is unavailable
# (e.g. running from a source checkout without an install).
_REPO_PRESETS = Path(__file__).resolve().parent.parent.parent / "presets"
# The dedicated flags of `pretrain` / `finetune` and the key each one sets (they win over --set).
FLAG_KEYS: dict[str, str] = {"--steps": "train.steps", "--batch-size": "train.batch_size",
                             "--precision": "train.precision", "--workers": "data.workers",
                             "--train": "train.trainable", "--teacher": "distill.teacher", "--student": "distill.student"}


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
        atomic_write_text(path, text)  # a failed write (disk full): one line, the previous file intact
