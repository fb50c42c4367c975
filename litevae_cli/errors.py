"""The exceptions a command ends with on purpose, and the one-line form of any error message.

Commands let a `UserError` propagate; the CLI prints its message as one line and exits non-zero,
with no traceback. A `Stopped` (a stop signal, or a data-loader worker that died) prints its line and
exits 128+signal. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib

# What building a model from user-given names and arguments raises when they do not fit.
BUILD_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, IndexError, ZeroDivisionError, AttributeError)


class UserError(ValueError):
    """A problem with what the user asked for, explained in one line."""


class ModelFileError(UserError):
    """A model file or folder that cannot be used (missing, malformed, a config or weights that do not fit):
    the one exception type `LiteVAE.from_pretrained` / `litevae_cli.load` raise for it, with the CLI's line."""


class Stopped(Exception):
    """The command stopped early and cleanly; `code` is the process exit status (128 + signal)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def one_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), cut at `limit`."""
    return (str(err).splitlines() or [type(err).__name__])[0][:limit]


@contextlib.contextmanager
def as_user_error(prefix: str, types: tuple = BUILD_ERRORS):
    """Turn `types` raised inside the block into a one-line UserError starting with `prefix`."""
    try:
        yield
    except types as err:
        raise UserError(f"{prefix}: {one_line(err, 200)}") from None
