"""Two fixes to Typer's rich help, applied once when the app is imported.

- A flag (`--dry-run/--no-dry-run`) takes no value, so its help row shows no `<bool>` type (Typer shows
  one, and `--dry-run true` is then refused).
- Positional arguments read as their metavar or upper-case name: `Usage: litevae eval [OPTIONS] MODEL`,
  not `{model}`; an optional one as `[NAME]`, a repeatable one with `...`.
- A bad option value (`--batch-size 0`, `--workers -1`: click's BadParameter) is one line,
  `error: Invalid value for '--batch-size': 0 is not in the range x>=1.`, exit 2, like every other
  bad input; a malformed command line (unknown option, missing argument) keeps Typer's usage box.
"""

from __future__ import annotations

import sys

from typer import core


def _display_type_rich(self, ctx):
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    return _OPTION_TYPE(self, ctx)


def _display_name_raw(self) -> str:
    return self.metavar if self.metavar is not None else str(self.name).upper()


def _usage_display_name(self) -> str:
    name = self.display_name_raw
    return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")


def _format_error(error) -> None:
    # By class name: Typer vendors click (typer._click) in recent versions, plain click in older ones.
    if any(cls.__name__ == "BadParameter" for cls in type(error).__mro__):
        sys.stderr.write(f"error: {' '.join(error.format_message().split())}\n")
        return
    _RICH_FORMAT_ERROR(error)


def apply() -> None:
    """Patch Typer's option and argument classes (a no-op for a Typer without these hooks)."""
    if getattr(core.TyperOption, "_litevae_patched", False):
        return
    if hasattr(core.TyperOption, "display_type_rich"):
        core.TyperOption.display_type_rich = _display_type_rich
    if isinstance(getattr(core.TyperArgument, "display_name_raw", None), property):
        core.TyperArgument.display_name_raw = property(_display_name_raw)
    if hasattr(core.TyperArgument, "_usage_display_name"):
        core.TyperArgument._usage_display_name = _usage_display_name
    if _RICH_FORMAT_ERROR is not None:
        rich_utils.rich_format_error = _format_error
    core.TyperOption._litevae_patched = True


_OPTION_TYPE = getattr(core.TyperOption, "display_type_rich", None)
try:
    from typer import rich_utils
    _RICH_FORMAT_ERROR = rich_utils.rich_format_error
except ImportError:  # Typer without rich: click's own one-paragraph message
    _RICH_FORMAT_ERROR = None
