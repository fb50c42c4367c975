"""The list of a source's images, held so that loader workers share it, and the folder scan that fills it.

`ItemTable` is a read-only sequence of `ImageItem` stored in a few numpy arrays (all keys in one UTF-8
byte buffer with offsets, all paths in another, class indices as int32) instead of 1.28M Python
objects: a forked DataLoader worker reads the parent's pages without writing to them (reading a Python
str bumps its refcount, which copies its page in every worker, so a list of 1.28M str per worker costs
its full size again in each). Items are built on access.

`scan_folder(root)`: the image files under `root` (recursive, sorted; hidden names skipped; symlinked
folders followed, each real folder at most once), and the entries with an image extension that are not
regular files (FIFOs, sockets, devices, broken links, symlink loops), each named as what it is. Uses
scandir's file types, so regular files cost no stat call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from litevae_cli.data.decode import file_problem


@dataclass(frozen=True)
class ImageItem:
    key: str
    source: str
    cls: Optional[int] = None
    class_name: Optional[str] = None


def _pack(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode("utf-8", "surrogateescape") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


class ItemTable(Sequence):
    """A read-only sequence of ImageItem kept in numpy arrays (see the module docstring)."""

    def __init__(self, keys: Sequence[str], sources: Sequence[str], cls: Optional[Sequence[Optional[int]]] = None,
                 class_names: Optional[Sequence[Optional[str]]] = None):
        n = len(keys)
        if len(sources) != n:
            raise ValueError("keys and sources differ in length")
        self._keys, self._key_off = _pack(keys)
        self._paths, self._path_off = _pack(sources)
        self._cls = np.array([-1 if c is None else c for c in (cls or [None] * n)], dtype=np.int64)
        names = sorted({c for c in (class_names or []) if c is not None})
        self._names = tuple(names)
        lookup = {c: i for i, c in enumerate(names)}
        self._name_idx = np.array([-1 if c is None else lookup[c] for c in (class_names or [None] * n)], dtype=np.int32)

    @classmethod
    def from_items(cls, items: Iterable[ImageItem]) -> "ItemTable":
        items = list(items)
        return cls([i.key for i in items], [i.source for i in items], [i.cls for i in items],
                   [i.class_name for i in items])

    def __len__(self) -> int:
        return len(self._cls)

    @staticmethod
    def _text(buf: np.ndarray, off: np.ndarray, i: int) -> str:
        return buf[off[i]:off[i + 1]].tobytes().decode("utf-8", "surrogateescape")

    def key(self, i: int) -> str:
        return self._text(self._keys, self._key_off, i)

    def source(self, i: int) -> str:
        return self._text(self._paths, self._path_off, i)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ItemTable.from_items(self[j] for j in range(*i.indices(len(self))))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(i)
        i = int(i) % n
        c, k = int(self._cls[i]), int(self._name_idx[i])
        return ImageItem(self.key(i), self.source(i), None if c < 0 else c, None if k < 0 else self._names[k])

    def __iter__(self) -> Iterator[ImageItem]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"ItemTable({len(self)} items)"

    def arrays(self) -> tuple[np.ndarray, ...]:
        """Every array the table holds (what a worker shares with its parent)."""
        return (self._keys, self._key_off, self._paths, self._path_off, self._cls, self._name_idx)


def scan_folder(root: str, exts: tuple[str, ...]) -> tuple[list[str], list[tuple[str, str]]]:
    """(sorted relative posix paths of the regular image files under root, [(relative path, what it is)]
    of the entries with an image extension that are not regular files)."""
    files, special, seen = [], [], set()
    stack = [(root, "")]
    while stack:
        path, rel = stack.pop()
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:  # reached again through a symlink: a loop or an alias
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:  # unreadable folder: skipped, as os.walk does
            continue
        dirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_dir = e.is_dir()
            except OSError:  # a symlink loop: not a folder
                is_dir = False
            if is_dir:
                dirs.append(e)
            elif e.name.lower().endswith(exts):
                try:
                    regular = e.is_file()
                except OSError:
                    regular = False
                if regular:
                    files.append(rel + e.name)
                else:
                    special.append((rel + e.name, file_problem(e.path) or "is not a regular file"))
        # Real folders before links to them (so a folder is named by its real path), in name order;
        # pushed reversed so the stack pops them in that order (top-down, depth first, like os.walk).
        dirs.sort(key=lambda e: (e.is_symlink(), e.name))
        stack.extend((e.path, rel + e.name + "/") for e in reversed(dirs))
    files.sort()
    special.sort()
    return files, special
