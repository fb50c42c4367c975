"""Shared data layer: image sources, decoding and transforms.

Owns the step from a `--data` spec to an `ImageSource`, for training (phase A/B), encode-dataset,
eval, reconstruct and inspect-latents, and the resolution checks. Decoding (pixel cap, special files,
colour) lives in `litevae_cli.data.decode`, the crops in `litevae_cli.data.transforms`, the shared
item list and the folder scan in `litevae_cli.data.index`; their public names are re-exported here.

Sources (`resolve_source`):
  * `sample`, `sample-holdout`, `sample-all`: the embedded set (see `litevae_cli.data.samples`),
    keys `sample/<name>`.
  * a directory: recursive (jpg/jpeg/png/webp/bmp/tif/tiff/gif, any case; hidden names skipped), sorted by relative
    posix path; key = relative path without extension (with it, if two files would share a key).
    Symlinked folders are followed, each real folder (device, inode) at most once, so a link loop
    (`loop -> .`) or two links to one folder do not repeat images. Entries with an image extension that
    are not regular files (FIFOs, sockets, devices, broken links, symlink loops) are left out and named
    as what they are in the source's notes.
    If every image sits exactly one folder deep, `cls` = index of its folder in the sorted folder list.
  * WebDataset shards (`dir/train-{000000..000009}.tar` or one .tar): image under jpg/jpeg/png/webp,
    optional cls. Key = `<shard stem>/<__key__>`, unique even when shards reuse per-shard counters.
    For http(s) shards the first URL is tried up front (`URL_TIMEOUT_S`), so an unreachable server
    is a one-line error at once rather than minutes of download retries.
  * one image file, a glob, or a .txt / .csv list of paths (`litevae_cli.data.lists`); a spec naming a
    FIFO, socket, device or link loop is a one-line error saying what it is.
  * a Hugging Face `datasets` dataset, `hf:NAME_OR_PATH[:SPLIT][#COLUMN]` (`litevae_cli.data.hf_datasets`).
  The sample names win over a folder of that name (use `./sample`). Bad specs raise `DataError`
  (a UserError, so the CLI prints it as one line) with a message naming the path.

`MIN_SIDE` is the smallest image side every registered model encodes and decodes (at 8 px a
GroupNorm sees one value per channel); `check_side` is the one check of a resolution option.
The train and eval loaders built on these live in `litevae_cli.data.loaders`.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

from litevae_cli.data import hf_datasets, lists
from litevae_cli.data import samples as sample_images
from litevae_cli.data.decode import (DataError, _open, check_image_path, hf_call as _hf, decode_image_bytes, file_problem,  # noqa: F401
                                     load_image, max_pixels, pil_to_tensor, pil_to_uint8, to_model_range, to_rgb)
from litevae_cli.data.index import ImageItem, ItemTable, scan_folder
from litevae_cli.data.transforms import CROPS, DEFAULT_RESCALE, eval_transform, train_transform  # noqa: F401
from litevae_cli.errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # GIF: its first frame
SHARD_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
DEFAULT_SHUFFLE_BUFFER = 1000
MULTIPLE = 8  # the encoders' 3-level DWT halves the size three times; the decoders upsample x8
MIN_SIDE = 16  # smallest image side the models take (8 px: the 1x1 latent breaks GroupNorm)
URL_TIMEOUT_S = 15
SPECIAL_NAMED = 5  # special files named in a folder source's note (then "and N more")


@dataclass
class ImageSource:
    """A resolved `--data` spec. kind: "sample" | "folder" | "dataset" | "shards".
    Map-style kinds fill `items` (ordered; a list given is stored as a shared `ItemTable`); "shards"
    fills `urls` (expanded, in pattern order)."""

    spec: str
    kind: str
    items: Sequence[ImageItem] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    classes: Optional[list[str]] = None
    notes: list[str] = field(default_factory=list)  # what a command should tell the user (duplicates dropped)

    def __post_init__(self):
        if isinstance(self.items, list) and self.items and all(isinstance(i, ImageItem) for i in self.items):
            self.items = ItemTable.from_items(self.items)

    @property
    def indexable(self) -> bool:
        return self.kind != "shards"

    def __len__(self) -> int:
        if not self.indexable:
            raise TypeError("a shard source has no known length")
        return len(self.items)


# ----------------------------------------------------------------------------- sources
SHARD_EXTS = (".tar", ".tar.gz", ".tgz")


def shard_stem(url: str) -> str:
    return re.sub(r"\.(tar|tar\.gz|tgz)$", "", posixpath.basename(url))


def _special_note(spec: str, special: list[tuple[str, str]]) -> list[str]:
    if not special:
        return []
    named = ", ".join(f"{rel} {what}" for rel, what in special[:SPECIAL_NAMED])
    more = f" and {len(special) - SPECIAL_NAMED} more" if len(special) > SPECIAL_NAMED else ""
    return [f"{spec}: skipped {len(special)} entr{'y' if len(special) == 1 else 'ies'} that are not image files: "
            f"{named}{more}"]


def _folder_source(spec: str, root: str) -> ImageSource:
    rels, special = scan_folder(root, IMAGE_EXTS)
    notes = _special_note(spec, special)
    if not rels:
        raise DataError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTS)}) under directory {spec}"
                        + (f" ({notes[0].split(': ', 1)[1]})" if notes else ""))
    stems = [posixpath.splitext(r)[0] for r in rels]
    counts = Counter(stems)
    classes = sorted({r.split("/", 1)[0] for r in rels}) if all(r.count("/") == 1 for r in rels) else None
    index = {c: i for i, c in enumerate(classes or [])}
    names = [r.split("/", 1)[0] for r in rels] if classes else [None] * len(rels)
    keys = [rel if counts[stem] > 1 else stem for rel, stem in zip(rels, stems)]
    del stems, counts
    sources = [os.path.join(root, *rel.split("/")) for rel in rels]
    del rels
    items = ItemTable(keys, sources, [index.get(n) for n in names], names)
    return ImageSource(spec, "folder", items=items, classes=classes, notes=notes)


def resolve_source(spec: str) -> ImageSource:
    """Turn a `--data` spec into an ImageSource (see the module docstring); DataError when unusable."""
    spec = str(spec)
    if spec in sample_images.SPLITS:
        files = sample_images.sample_files(spec)
        if not files:
            raise DataError(f"sample set {spec!r}: no image found in {sample_images.sample_data_dir()}")
        return ImageSource(spec, "sample", items=[ImageItem(f"sample/{n}", p) for n, p in files])
    if hf_datasets.claims(spec):
        rows, classes, notes = _hf(hf_datasets.items, spec)
        return ImageSource(spec, "dataset", items=[ImageItem(*r) for r in rows], classes=classes, notes=notes)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return _folder_source(spec, path)
    named = _named_files(spec, path)
    if named is not None:
        items, notes = lists.keyed_paths(spec, named)
        return ImageSource(spec, "folder", items=[ImageItem(k, p) for k, p in items], notes=notes)
    if os.path.lexists(path) and not os.path.isdir(path):
        problem = file_problem(path)
        if problem and problem != "not found":
            raise DataError(f"{spec} {problem}")
    if "{" in path or path.endswith(SHARD_EXTS):
        import braceexpand

        urls = list(braceexpand.braceexpand(path))
        remote = [u for u in urls if _remote(u)]
        missing = [u for u in urls if u not in remote and not os.path.isfile(u)]
        if len(missing) == len(urls):
            raise DataError(f"shard pattern {spec} matches no file")
        if missing:
            raise DataError(f"shard pattern {spec}: {len(missing)} of {len(urls)} shards missing, e.g. {missing[0]}")
        if remote and remote[0].startswith(("http://", "https://")):
            _check_reachable(remote[0])
        return ImageSource(spec, "shards", urls=urls)
    if not os.path.exists(path):
        raise DataError(f"data path does not exist: {spec}")
    raise DataError(f"{spec} is not an image folder, an image, a glob, a .txt/.csv list of images, a .tar shard "
                    f"pattern or one of {', '.join(sample_images.SPLITS)}")


def _named_files(spec: str, path: str) -> Optional[list[str]]:
    """The files a list, a single image or a glob names (None: the spec is none of these)."""
    try:
        if os.path.isfile(path) and path.lower().endswith(lists.LIST_EXTS):
            return lists.read_list(path)
        if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTS):
            return [path]
        if lists.is_glob(path) and not os.path.exists(path) and not path.endswith(SHARD_EXTS):
            return lists.glob_paths(spec, IMAGE_EXTS)
    except lists.ListError as err:
        raise DataError(str(err)) from None
    return None


def _remote(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def _check_reachable(url: str) -> None:
    """DataError unless the server answers for `url` within URL_TIMEOUT_S (any answer but 404/410)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=URL_TIMEOUT_S).close()
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise DataError(f"shard {url}: HTTP {e.code} (not found)") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"cannot reach shard {url}: {reason}") from None


def source_id(spec: str) -> str:
    """The `--data` spec as recorded with outputs: sample names and URLs as given, paths made absolute."""
    spec = str(spec)
    if spec in sample_images.SPLITS or _remote(spec):
        return spec
    if hf_datasets.claims(spec):
        return _hf(hf_datasets.spec_id, spec)
    return os.path.abspath(os.path.expanduser(spec))


def check_crop(crop: str, what: str = "--crop") -> str:
    """`crop` as one of CROPS, else a UserError about `what`."""
    if crop not in CROPS:
        raise UserError(f"{what} must be {' or '.join(CROPS)}, got {crop!r}")
    return crop


def upscale_warning(count: int, resolution: int) -> str:
    """The one line eval, training and encode-dataset print when `count` images were under `resolution` px."""
    return f"warning: {count} image(s) with a short side under {resolution} px were upscaled (bicubic) to {resolution} px"


def check_side(value: int, what: str) -> int:
    """`value` as an image side: a multiple of MULTIPLE and at least MIN_SIDE, else a UserError about `what`."""
    if value % MULTIPLE or value < MIN_SIDE:
        raise UserError(f"{what} must be a multiple of {MULTIPLE} and at least {MIN_SIDE}, got {value}")
    return value


DEFAULT_RESOLUTION = 256  # px, what --resolution means when it is not given


def parse_resolutions(text, default: int = DEFAULT_RESOLUTION) -> list[int]:
    """--resolution: '256,512' -> [256, 512] (None -> [default]); each a side the models take (`check_side`)."""
    if text is None:
        return [default]
    try:
        res = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--resolution must be integers separated by commas, got {text!r}") from None
    if not res:
        raise UserError(f"--resolution: no resolution in {text!r}")
    return list(dict.fromkeys(check_side(r, "--resolution") for r in res))


def parse_resolution(text, default: int = DEFAULT_RESOLUTION) -> int:
    """--resolution of a command that takes one (None -> `default`)."""
    res = parse_resolutions(text, default)
    if len(res) != 1:
        raise UserError(f"--resolution: this command takes one resolution, got {text!r}")
    return res[0]
