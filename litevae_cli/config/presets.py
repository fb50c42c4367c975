"""Presets and their resolution: lookup by name or path, `--set` overrides, the dedicated flags, load and dump.

`resolve_config` is the one pass: the preset file, then `--set` overrides, then the dedicated flags
(`FLAG_KEYS`, which win), merged as plain data and validated once (`config.checks`), each key remembering
where it came from; `phase` is checked against the subcommand there.

Preset files are read strictly (`read_preset`, issue 25): UTF-8 text only, at most MAX_PRESET_BYTES,
no duplicate mapping keys at any depth (PyYAML keeps the last silently), no anchors or aliases (plain
data has no use for them, and nested aliases expand exponentially: a "billion laughs"); each refusal is
one line naming the file and the line. `--set` values are parsed by the same loader.
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
                             "--train": "train.trainable", "--teacher": "distill.teacher", "--student": "distill.student",
                             "--compile": "runtime.compile"}


# A preset is a few KB of YAML; a megabyte is no preset (and reading it whole must stay cheap).
MAX_PRESET_BYTES = 1 << 20


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases (so anchors are useless and no alias bomb can expand) and
    duplicate mapping keys; both raise a MarkedYAMLError whose problem_mark is the offending line."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed (presets are plain "
                                              "data: write the value out)", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


class _PlainDumper(yaml.SafeDumper):
    """yaml.SafeDumper that never writes anchors/aliases (an object met twice is written twice), so every
    config.yaml it writes reads back with `read_preset`."""

    def ignore_aliases(self, data):
        return True


def _yaml_error(exc: yaml.YAMLError) -> str:
    """'line N: problem' of a YAML error, else its first line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}: {problem}"
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def parse_yaml(text: str):
    """Plain data from YAML text, strictly (`_StrictLoader`); raises yaml.YAMLError."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_preset(path: Path):
    """A preset (or a run's config.yaml) as plain data; any problem is one UserError naming the file and line."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PRESET_BYTES + 1)
    except OSError as err:
        raise UserError(f"cannot read preset {path}: {err.strerror or err}") from None
    if len(raw) > MAX_PRESET_BYTES:
        raise UserError(f"preset {path} is larger than {MAX_PRESET_BYTES >> 20} MB: not a preset (a few KB of YAML)")
    if b"\0" in raw:
        line = raw[:raw.index(b"\0")].count(b"\n") + 1
        raise UserError(f"preset {path} line {line}: a binary file (NUL byte), not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserError(f"preset {path} line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x})") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse preset {path} {_yaml_error(exc)}") from None
    except RecursionError:
        raise UserError(f"cannot parse preset {path}: nested too deeply") from None


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
        value = parse_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        why = getattr(exc, "problem", None) if mark is not None else None
        raise UserError(f"--set {key}: cannot parse value {raw!r} as YAML ({why or exc.__class__.__name__})") from None
    except RecursionError:
        raise UserError(f"--set {key}: value nested too deeply") from None
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
    data = read_preset(path)
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
    text = yaml.dump(config_to_dict(cfg), Dumper=_PlainDumper, sort_keys=False, default_flow_style=None)
    text += yaml.dump({"run": run}, Dumper=_PlainDumper, sort_keys=False) if run else ""
    if hasattr(path, "write"):
        path.write(text)
    else:
        atomic_write_text(path, text)  # a failed write (disk full): one line, the previous file intact
