"""The one exception type for bad user input (paths, presets, checkpoints, options).

Commands let a `UserError` propagate; the CLI prints its message as one line and exits non-zero,
with no traceback. Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with what the user asked for, explained in one line."""
