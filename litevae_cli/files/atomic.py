"""Atomic file writes: a temp file beside the target, fsync, then one rename over it.

Owns the one way the toolkit publishes a file that must never be seen half-written: checkpoints,
exported models, downloaded reference weights. The temp file is created like a plain `open(path, "w")`
creates a file, mode 0666 minus the umask (0644 under the usual umask 022), so checkpoints and exports
on shared storage are readable by the group as torch.save and safetensors users expect; tempfile.mkstemp
would make them 0600. Its name, `.NAME.<random>.tmp`, starts with a dot so that folder listings and the
training loop's stale-temp sweep (`.*.pt.*`) recognise it. On any exception inside the block the temp
file is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


def _create_temp(path: Path) -> Path:
    """A new, empty file beside `path` with the mode a plain open() would give it."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temp file beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    mode = os.stat(tmp).st_mode & 0o777  # what open() gives here; a writer that replaces the file may not keep it
    try:
        yield tmp
        os.chmod(tmp, mode)  # safetensors' save_file, for one, leaves 0600
        with open(tmp, "rb+") as f:  # whoever wrote it may have used another handle: sync the file itself
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
