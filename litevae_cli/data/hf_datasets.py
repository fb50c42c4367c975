"""`--data` from a Hugging Face `datasets` dataset (the optional extra: `pip install 'litevae[hf]'`).

Spec: `hf:NAME_OR_PATH[:SPLIT][#COLUMN]`
  - NAME_OR_PATH: a folder written by `save_to_disk` (a Dataset or a DatasetDict), a local folder
    `datasets.load_dataset` reads (`imagefolder` images, parquet/arrow files), one `.parquet` file, or a
    Hub dataset name (`user/name`: downloaded once through `datasets` into its cache, so online then).
  - SPLIT: which split of a DatasetDict / Hub dataset; default `train`, or the only split there is.
    datasets' slices work (`train[:1000]`).
  - COLUMN: the image column; default the first column whose feature type is `datasets.Image`.
  A `save_to_disk` folder (it holds dataset_dict.json, or state.json + dataset_info.json) and a `.parquet` file are
  recognised without the `hf:` prefix too.

Row i becomes an item with key `[SPLIT/]<i, zero-padded>` and source `<canonical spec>[i]`
(canonical: absolute path, split and column made explicit), which `read_item` opens again in any
process (the opened table is cached per process, memory-mapped). The image cell is read undecoded
(`Image(decode=False)`: bytes, or a path) and decoded by `data.sources` like any file. A ClassLabel
column gives the items' cls / class_name. Plain data out, like `data.lists`; `datasets` is imported
only for these specs.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Optional

from litevae_cli.errors import one_line

PREFIX = "hf:"
INSTALL = "pip install 'litevae[hf]' (or pip install datasets)"
_ITEM = re.compile(r"^(hf:.*)\[(\d+)\]$")


class HFError(ValueError):
    """A dataset spec that cannot be used (one line)."""


def is_saved_dataset(path: str) -> bool:
    """A `save_to_disk` folder: dataset_dict.json (a DatasetDict) or state.json + dataset_info.json (a Dataset)."""
    has = [os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json", "dataset_info.json")]
    return has[0] or (has[1] and has[2])


def claims(spec: str) -> bool:
    """Whether `spec` names a datasets dataset: the hf: prefix, a save_to_disk folder or a .parquet file."""
    path = os.path.expanduser(spec)
    return spec.startswith(PREFIX) or is_saved_dataset(path) or (os.path.isfile(path) and path.lower().endswith(".parquet"))


def is_item(source: str) -> bool:
    return source.startswith(PREFIX) and _ITEM.match(source) is not None


def parse(spec: str) -> tuple[str, Optional[str], Optional[str]]:
    """`[hf:]NAME[:SPLIT][#COLUMN]` -> (name or absolute local path, split or None, column or None)."""
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    if body.startswith("//"):  # hf://user/name reads as hf:user/name
        body = body[2:]
    body, _, column = body.partition("#")
    name, _, split = body.partition(":")
    if not name:
        raise HFError(f"--data {spec}: no dataset named (use hf:NAME_OR_PATH[:SPLIT][#COLUMN])")
    local = os.path.expanduser(name)
    if os.path.exists(local):
        name = os.path.abspath(local)
    return name, split or None, column or None


def spec_id(spec: str) -> str:
    """The spec as recorded with outputs: the hf: form with a local path made absolute."""
    name, split, column = parse(spec)
    return PREFIX + name + (f":{split}" if split else "") + (f"#{column}" if column else "")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise HFError(f"--data names a Hugging Face dataset but the `datasets` package is not installed: "
                      f"{INSTALL}") from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _pick_split(spec: str, splits: list[str]) -> str:
    if "train" in splits or len(splits) == 1:
        return "train" if "train" in splits else splits[0]
    raise HFError(f"--data {spec}: the dataset has splits {', '.join(splits)}; name one as hf:NAME:SPLIT")


def _load(spec: str, name: str, split: Optional[str]):
    """(Dataset, split used or None) for a parsed spec."""
    ds = _datasets()
    try:
        if is_saved_dataset(name):
            data = ds.load_from_disk(name)
            if isinstance(data, ds.DatasetDict):
                split = split or _pick_split(spec, list(data))
                if split not in data:
                    raise HFError(f"--data {spec}: no split {split!r} (splits: {', '.join(data)})")
                return data[split], split
            if split:
                raise HFError(f"--data {spec}: {name} holds one Dataset, not splits (drop :{split})")
            return data, None
        if os.path.isfile(name) and name.lower().endswith(".parquet"):
            return ds.load_dataset("parquet", data_files=name, split=split or "train"), split or "train"
        if split is None:
            split = _pick_split(spec, list(ds.get_dataset_split_names(name)))
        return ds.load_dataset(name, split=split), split
    except HFError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets/hub raise many types (offline, missing, bad files)
        raise HFError(f"cannot load Hugging Face dataset {name}: {one_line(err)}"
                      + (" (HF_HUB_OFFLINE is set: only datasets already in the cache load)" if os.environ.get("HF_HUB_OFFLINE") in ("1", "true")
                         and not os.path.exists(name) else "")) from None


def _image_column(spec: str, data, column: Optional[str]) -> str:
    ds = _datasets()
    features = data.features
    if column is not None:
        if column not in features:
            raise HFError(f"--data {spec}: no column {column!r} (columns: {', '.join(features)})")
        return column
    found = next((c for c, f in features.items() if isinstance(f, ds.Image)), None)
    if found is None:
        raise HFError(f"--data {spec}: no column of type datasets.Image (columns: {', '.join(features)}); "
                      f"name the image column as hf:NAME#COLUMN")
    return found


def items(spec: str) -> tuple[list[tuple[str, str, Optional[int], Optional[str]]], Optional[list[str]], list[str]]:
    """(key, source, cls, class_name) per row, the class names (None without a ClassLabel column), notes."""
    name, split, column = parse(spec)
    data, split = _load(spec, name, split)
    column = _image_column(spec, data, column)
    if len(data) == 0:
        raise HFError(f"--data {spec}: the dataset has no rows")
    canonical = PREFIX + name + (f":{split}" if split else "") + f"#{column}"
    ds = _datasets()
    label = next((c for c, f in data.features.items() if isinstance(f, ds.ClassLabel)), None)
    classes = list(data.features[label].names) if label else None
    labels = data[label] if label else [None] * len(data)
    width = max(6, len(str(len(data) - 1)))
    prefix = f"{split}/" if split else ""
    rows = [(f"{prefix}{i:0{width}d}", f"{canonical}[{i}]", cls, classes[cls] if classes and cls is not None
             and 0 <= cls < len(classes) else None) for i, cls in enumerate(labels)]
    note = f"{spec}: {len(rows)} images from column {column!r}" + (f" of split {split!r}" if split else "")
    return rows, classes, [note]


@functools.lru_cache(maxsize=8)
def _opened(canonical: str):
    """The image column of a canonical spec, undecoded (opened once per process)."""
    ds = _datasets()
    name, split, column = parse(canonical)
    data, _ = _load(canonical, name, split)
    data = data.select_columns([column])
    if isinstance(data.features[column], ds.Image):
        data = data.cast_column(column, ds.Image(decode=False))
    return data, column


def read_item(source: str) -> bytes:
    """The encoded image bytes of one item source (`<canonical spec>[i]`); HFError when unreadable."""
    m = _ITEM.match(source)
    if m is None:
        raise HFError(f"not a dataset item: {source}")
    data, column = _opened(m.group(1))
    i = int(m.group(2))
    if i >= len(data):
        raise HFError(f"{source}: the dataset has {len(data)} rows")
    cell = data[i][column]
    if isinstance(cell, dict):  # Image(decode=False): {"bytes": ..., "path": ...}
        if cell.get("bytes"):
            return cell["bytes"]
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if isinstance(cell, str):  # a path column (or an Image stored by path)
        try:
            with open(cell, "rb") as f:
                return f.read()
        except OSError as err:
            raise HFError(f"{source}: cannot read {cell}: {err.strerror}") from None
    if hasattr(cell, "save"):  # a PIL image (a column cast to Image with decode on)
        import io

        buf = io.BytesIO()
        cell.save(buf, format="PNG")
        return buf.getvalue()
    raise HFError(f"{source}: column {column!r} holds {type(cell).__name__}, not an image")
