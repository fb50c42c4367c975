"""Every file the toolkit writes goes through here: atomic replacement, appends, and one-line write errors.

Owns
- `atomic_path(path)` / `atomic_file(path)`: a temp file beside the target, fsync, one rename over it.
  The temp file is created like a plain `open(path, "w")` creates a file, mode 0666 minus the umask
  (0644 under the usual umask 022), so checkpoints and exports on shared storage are readable by the
  group; tempfile.mkstemp would make them 0600. Its name, `.NAME.<random>.tmp`, starts with a dot so that
  folder listings and the training loop's stale-temp sweep (`.*.pt.*`) recognise it. On any exception
  the temp file is removed and the target is left as it was. A target that exists and is no regular
  file (/dev/stdout, a FIFO) is written in place: renaming over a device node would replace it.
- `write_bytes`, `write_text`, `write_json`, `torch_save`, `save_image`: whole files through `atomic_file`.
  `torch_save` makes equal contents equal bytes: it serializes into a file object, so the zip record prefix
  is torch's fixed `archive/` (given a path, torch names the records after the file: the random temp
  name), and pickles a `canonical` copy (equal strings one object: pickle's memo goes by identity).
- `append_text(path, text)`: an append that is all or nothing (a failed one is cut back off the file).
- `open_stream` / `close_stream`: a plain (non-atomic) output stream for writers that own their naming,
  such as the latent shards (a shard is committed by the encode journal, not by a rename).
- `WriteError` (a UserError) and `write_guard(path)`: any failed write (ENOSPC, EIO, EDQUOT, EROFS,
  EACCES), also when torch or safetensors wrap the OSError in their own exception, becomes one line:
  `cannot write PATH: No space left on device (errno 28); the previous NAME is intact`.
Every byte goes out through `os.write` (streams expose no fileno, so PIL and tarfile write through
Python too); the fault-injection tests patch it there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Optional

from litevae_cli.errors import UserError, one_line

BUFFER = 1 << 20
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno)\s*:?\s*(\d+)", re.IGNORECASE)
_TORCH_WRITE = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


class WriteError(UserError):
    """A file could not be written; one line naming it, the cause and what was kept."""

    def __init__(self, path, reason: str, note: str = ""):
        self.path, self.reason, self.note = Path(path), reason, note
        super().__init__(f"cannot write {path}: {reason}{note}")

    def with_note(self, note: str) -> "WriteError":
        return WriteError(self.path, self.reason, note)


def os_error_in(err: BaseException) -> Optional[OSError]:
    """The OSError behind `err`: itself, or one in its __cause__/__context__ chain (torch raises a
    RuntimeError "[enforce fail at inline_container.cc] unexpected pos" whose context is the OSError);
    else an errno named in a write library's message ("I/O error: ... (os error 28)"); else None."""
    seen, e = set(), err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        if isinstance(e, UserError):
            return None  # already a message for the user
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    text = str(err)
    if type(err).__name__ == "SafetensorError" or any(s in text for s in _TORCH_WRITE):
        m = _ERRNO_IN_TEXT.search(text)
        if m:
            n = int(m.group(1))
            return OSError(n, os.strerror(n))
        return OSError(0, one_line(err, 200))
    return None


def describe(err: OSError) -> str:
    """'No space left on device (errno 28)'."""
    text = err.strerror or one_line(err, 200)
    return f"{text} (errno {err.errno})" if err.errno else text


def _intact_note(path: Path) -> str:
    return f"; the previous {path.name} is intact" if path.is_file() else ""


@contextlib.contextmanager
def write_guard(path: str | Path, note: Optional[str] = None) -> Iterator[None]:
    """A failed write inside the block (OSError, or one wrapped by torch/safetensors) -> `WriteError` naming
    `path`. A WriteError from a helper inside keeps its file; `note`, when given, replaces its note."""
    try:
        yield
    except WriteError as err:
        if note is None:
            raise
        raise err.with_note(note) from None
    except UserError:
        raise  # a message of its own (a refused download, say), whatever it was raised from
    except BaseException as err:
        cause = os_error_in(err)
        if cause is None:
            raise
        raise WriteError(path, describe(cause), note or "") from None


# ----------------------------------------------------------------------------- the byte stream
class _OsFile(io.RawIOBase):
    """A raw writable stream on a file descriptor that writes with os.write (see the module docstring)."""

    def __init__(self, fd: int, name: str):
        self.fd, self.name = fd, name

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return os.write(self.fd, b)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self.fd)
            finally:
                super().close()


def _stream(fd: int, name: str) -> io.BufferedWriter:
    return io.BufferedWriter(_OsFile(fd, name), buffer_size=BUFFER)


def open_stream(path: str | Path) -> io.BufferedWriter:
    """A new (truncated) file at `path` for a writer that names its own files; close it with `close_stream`."""
    with write_guard(path):
        return _stream(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), str(path))


def close_stream(f: io.BufferedWriter, sync: bool = True) -> None:
    """Flush, fsync (when `sync`) and close a stream from `open_stream`; a failure is a WriteError."""
    with write_guard(f.raw.name):
        try:
            f.flush()
            if sync:
                f.raw.sync()
        finally:
            with contextlib.suppress(OSError, ValueError):
                f.close()  # after a failed flush close() retries the flush and fails again: the fd closes anyway


# ----------------------------------------------------------------------------- atomic replacement
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


def _in_place(path: Path) -> bool:
    """An existing target that is not a regular file (a device, a FIFO): written in place, never renamed over."""
    return path.exists() and not path.is_file() and not path.is_dir()


@contextlib.contextmanager
def atomic_path(path: str | Path, note: Optional[str] = None) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; on success fsync it and rename it over `path`. A failed write
    is a `WriteError` (by default noting that the previous file is intact) and leaves no temp file."""
    path = Path(path)
    note = _intact_note(path) if note is None else note
    if _in_place(path):
        with write_guard(path, note):
            yield path
        return
    with write_guard(path, note):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temp(path)
    try:
        with write_guard(path, note):
            mode = os.stat(tmp).st_mode & 0o777  # what open() gives here; a writer that replaces it may not keep it
            yield tmp
            os.chmod(tmp, mode)  # safetensors' save_file, for one, leaves 0600
            fd = os.open(tmp, os.O_RDONLY)  # whoever wrote it may have used another handle: sync the file itself
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, note: Optional[str] = None) -> Iterator[io.BufferedWriter]:
    """`atomic_path`, yielding a binary stream on the temp file instead (flushed and closed before the rename)."""
    path = Path(path)
    with atomic_path(path, note) as tmp:
        flags = os.O_WRONLY | (os.O_TRUNC if tmp == path else 0)
        f = _stream(os.open(tmp, flags), str(tmp))
        try:
            yield f
            f.flush()
        finally:
            with contextlib.suppress(OSError, ValueError):
                f.close()


def write_bytes(path: str | Path, data: bytes, note: Optional[str] = None) -> Path:
    with atomic_file(path, note) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str, note: Optional[str] = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), note)


def write_json(path: str | Path, obj, indent: Optional[int] = 2, **kw) -> Path:
    """`obj` as JSON (json.dumps with `indent` and `kw`) plus a newline, atomically."""
    return write_text(path, json.dumps(obj, indent=indent, **kw) + "\n")


def canonical(obj):
    """A copy of a plain-data tree (dicts, lists, tuples; tensors and other leaves shared) in which equal
    strings are one object. pickle memoizes by identity, so without this a key that one run built from a
    literal and another read back from a checkpoint ("step" of a resumed optimizer) pickles differently."""
    if isinstance(obj, str):
        return sys.intern(obj) if type(obj) is str else obj
    if isinstance(obj, dict) and type(obj) in (dict, OrderedDict):
        out = type(obj)((canonical(k), canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a module state_dict's per-module versions
            out._metadata = canonical(obj._metadata)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(canonical(v) for v in obj)
    return obj


def torch_save(obj, path: str | Path, note: Optional[str] = None) -> Path:
    """torch.save of `canonical(obj)` into a file object, atomically. Equal contents give equal bytes: given a
    file object torch names the zip records `archive/...` (given a path, after the random temp file)."""
    import torch

    obj = canonical(obj)
    with atomic_file(path, note) as f:
        torch.save(obj, f)
    return Path(path)


def save_image(image, path: str | Path, format: Optional[str] = None, **params) -> Path:
    """A PIL image, its format from the target's suffix unless given (the temp file's name ends in .tmp)."""
    from PIL import Image

    path = Path(path)
    fmt = format or Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot write {path}: unknown image file extension {path.suffix!r}")
    with atomic_file(path) as f:
        image.save(f, format=fmt, **params)
    return path


# ----------------------------------------------------------------------------- appends
def append_text(path: str | Path, text: str, sync: bool = False) -> None:
    """Append `text` to `path` (created when missing); a failed append is cut back off, so the file keeps
    exactly its previous bytes (no torn line), and raises a WriteError. `sync`: fsync before returning."""
    path = Path(path)
    data = text.encode("utf-8")
    with write_guard(path, f"; {path.name} is kept as it was"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if sync:
                    os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
