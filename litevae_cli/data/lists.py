"""`--data` sources named file by file: one image, a glob, or a .txt / .csv list of image paths.

- one image file (any extension in `IMAGE_EXTS`): a source of that image;
- a glob (`photos/*.jpg`, `data/**/*.png`, recursive `**`): the matching image files, sorted;
- a `.txt` list (one path a line; blank lines and `#` comments skipped) or a `.csv` list (the column
  named path, image, file, filename or filepath, else the first column): paths relative to the list's
  own folder. A path that is missing or unreadable stays in the list: the loaders skip it and name it
  in skipped.txt, like a bad file in a folder. So does a FIFO, socket, device or link loop a list or a glob
  names: the loaders name it as what it is ("x.png is a FIFO, not an image file") and never open it.
The same file listed twice (by real path) is used once, and a note says how many were dropped.
Keys are the paths relative to the files' common folder, without extension unless two would collide.
Plain data out (`(key, path)` pairs and notes); `data.sources` builds the ImageSource and turns
`ListError` into its DataError.
"""

from __future__ import annotations

import csv
import glob
import os
import posixpath
from collections import Counter

LIST_EXTS = (".txt", ".csv")
PATH_COLUMNS = ("path", "image", "file", "filename", "filepath")


class ListError(ValueError):
    """A list or glob that names no usable image (one line)."""


def is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def read_list(path: str) -> list[str]:
    """The image paths a .txt / .csv list names, made relative to the list's folder."""
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            if path.lower().endswith(".csv"):
                rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
                header = [c.strip().lower() for c in rows[0]] if rows else []
                col = next((header.index(n) for n in PATH_COLUMNS if n in header), None)
                entries = [r[col or 0].strip() for r in (rows[1:] if col is not None else rows) if len(r) > (col or 0)]
            else:
                entries = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ListError(f"cannot read the image list {path}: {getattr(err, 'strerror', None) or err}") from None
    if not entries:
        raise ListError(f"the image list {path} names no image")
    return [os.path.join(base, os.path.expanduser(e)) for e in entries]


def keyed_paths(spec: str, paths: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(key, path) of these files in order, each real file once, and the notes (how many repeats)."""
    unique, seen = [], set()
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            unique.append(os.path.abspath(p))
    root = os.path.commonpath([os.path.dirname(p) for p in unique])
    rels = [os.path.relpath(p, root).replace(os.sep, "/") for p in unique]
    stems = [posixpath.splitext(r)[0] for r in rels]
    counts = Counter(stems)
    items = [(rel if counts[stem] > 1 else stem, p) for p, rel, stem in zip(unique, rels, stems)]
    dropped = len(paths) - len(unique)
    notes = [f"{dropped} duplicate path(s) in {spec} name a file already listed: each file is used once "
             f"({len(unique)} images)"] if dropped else []
    return items, notes


def glob_paths(spec: str, exts: tuple[str, ...]) -> list[str]:
    """The image files (by extension) a glob matches, sorted; ListError when none. Special files (FIFOs,
    sockets, devices, broken links, loops) are kept, for the loaders to skip and name."""
    found = sorted(p for p in glob.glob(os.path.expanduser(spec), recursive=True)
                   if not os.path.isdir(p) and p.lower().endswith(exts))
    if not found:
        raise ListError(f"no images ({', '.join(e[1:] for e in exts)}) match {spec}")
    return found
