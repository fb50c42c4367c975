"""Where commands write: the output-folder lock, checks before the work, write errors, skipped.txt.

Owns:
- `OutputLock` / `locked`: an exclusive `fcntl.flock` on OUT/.litevae.lock, which holds the holder's
  PID, for as long as a command writes OUT (training --out, encode-dataset --out), so two runs never
  interleave their files. A second run refuses with one line naming the holder's PID. The kernel
  drops the lock when its process dies, so a lock file left by a dead process is simply taken over.
  Forked data-loader workers close their copies (`release_inherited_locks`): the lock ends with
  the main process.
- `check_out_dir` / `check_out_file`: before any work, an output is not a file where a folder is
  wanted (nor the reverse) and its folder accepts new files (probed with a nameless temporary file,
  which also catches read-only mounts when running as root).
- `writing(path)`: a failed write becomes a one-line UserError naming the path (`files.atomic.write_guard`).
- `SkipLog`: unreadable inputs are counted, named in skipped.txt (`key<TAB>reason` per line) and
  the first few printed; the command goes on.
- `sha256_file`. Every file write itself goes through `files.atomic`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional

from litevae_cli.errors import UserError, one_line
from litevae_cli.files.atomic import append_text, write_guard, write_text

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected from each other there
    fcntl = None

LOCK_NAME = ".litevae.lock"
SKIPPED_NAME = "skipped.txt"
_HELD: set[int] = set()  # file descriptors of the locks this process holds


# ----------------------------------------------------------------------------- checks and write errors
def _check_creatable(folder: Path) -> None:
    """`folder`, or its nearest existing ancestor when it is still to be made, accepts new files."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create {folder}: {probe} is a file")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise UserError(f"cannot write in {probe}: {err.strerror or one_line(err)}") from None


def check_out_dir(path: str | Path, what: str = "--out") -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    _check_creatable(path)
    return path


def check_out_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file")
    _check_creatable(path.parent)
    return path


def writing(path: str | Path, note: str = ""):
    """A failed write inside the block (disk full, read-only, a file in the way; also wrapped by torch or
    safetensors) -> one-line `files.atomic.WriteError` naming `path`; `note`, when given, says what is kept."""
    return write_guard(path, note or None)


# ----------------------------------------------------------------------------- the folder lock
class OutputLock:
    """An exclusive lock on one output folder (module docstring); a context manager."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: Optional[int] = None

    def __enter__(self) -> "OutputLock":
        if fcntl is None:
            return self
        with writing(self.path):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{self.folder} is in use by another litevae process (PID {holder}); wait for it "
                            "to end or choose another --out") from None
        with writing(self.path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        _HELD.add(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            _HELD.discard(self.fd)
            os.close(self.fd)  # releases the lock; the file stays for the next run to take
            self.fd = None


@contextlib.contextmanager
def locked(folder: str | Path, rt=None):
    """`OutputLock` held by rank 0 for the block; under torchrun every rank raises if rank 0 could not lock."""
    lock, error = OutputLock(folder), None
    if rt is None or rt.is_main:
        try:
            lock.__enter__()
        except UserError as err:
            error = err
    if rt is not None and rt.distributed:
        from litevae_cli.runtime import any_rank

        if any_rank(rt, error is not None)[0] and error is None:
            error = UserError(f"{folder} is in use by another litevae process (see rank 0)")
    if error is not None:
        lock.__exit__()
        raise error
    try:
        yield lock
    finally:
        lock.__exit__()


def release_inherited_locks() -> None:
    """In a forked child: close the copies of this process's lock descriptors (the parent keeps its lock)."""
    for fd in list(_HELD):
        _HELD.discard(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- skipped inputs
def skipped_lines(pairs: Iterable[tuple[str, str]]) -> str:
    """skipped.txt's text: one `key<TAB>reason` line per unreadable input."""
    return "".join(f"{key}\t{reason}\n" for key, reason in pairs)


class SkipLog:
    """Unreadable inputs of one command, counted by image (`count`: distinct keys this run; `reads`: every
    failed read, e.g. once per training pass), each key written once to `path` (None: console only) and the
    first `show` keys printed with `say`. `resume` appends to the list a previous run of the same output
    left; otherwise the list starts empty."""

    def __init__(self, path: Optional[Path] = None, say: Callable = print, show: int = 3, resume: bool = False):
        self.path, self.say, self.show = path, say, show
        self.reads = self.printed = 0
        self.keys: set[str] = set()
        self.images: set[str] = set()  # skipped by this run
        if path is not None and resume and path.is_file():
            self.keys = {line.split("\t", 1)[0] for line in path.read_text().splitlines()}
        elif path is not None and not resume:
            write_text(path, "")

    @property
    def count(self) -> int:
        return len(self.images)

    def add(self, key: str, reason: str) -> None:
        self.reads += 1
        self.images.add(key)
        if key in self.keys:
            return
        self.keys.add(key)
        if self.printed < self.show:
            self.printed += 1
            self.say(f"skipped unreadable {key}: {reason}")
        if self.path is not None:
            append_text(self.path, skipped_lines([(key, reason)]))

    def extend(self, pairs: Iterable[tuple[str, str]]) -> None:
        for key, reason in pairs:
            self.add(key, reason)

    def summary(self) -> str:
        where = f", listed in {self.path}" if self.path is not None else ""
        reads = f" ({self.reads} failed reads over the passes)" if self.reads > self.count else ""
        return f"{self.count} unreadable image(s) skipped{reads}{where}"
