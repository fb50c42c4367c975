"""Opt-in, verified downloads: the permission, streaming with a progress bar, and the atomic, hash-checked write.

Nothing is fetched unless asked: the `download` argument (a command's --download-weights) or the
environment variable LITEVAE_DOWNLOAD_WEIGHTS=1 (`requested`). `download_verified` streams a URL into a
temp file in the target folder (`files.atomic.atomic_path`), hashing the bytes as they arrive, and renames
it into place only when its sha256 equals the expected one; any failure (HTTP error, no route, a full
disk, a hash mismatch) is one UserError naming the file, and nothing is left behind. Used for the
reference weights (`metrics.weights`) and for VAE folders from the Hugging Face Hub (`files.hub`).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from litevae_cli.errors import UserError, one_line
from litevae_cli.files.atomic import atomic_path

ENV_DOWNLOAD = "LITEVAE_DOWNLOAD_WEIGHTS"
CHUNK = 1 << 20
TIMEOUT_S = 60  # per connection attempt and per read, not for the whole file


def requested(download: bool = False) -> bool:
    """`download` (a command's --download-weights), or LITEVAE_DOWNLOAD_WEIGHTS is 1 / true / yes / on."""
    value = os.environ.get(ENV_DOWNLOAD, "").strip().lower()
    if value not in ("", "0", "false", "no", "off", "1", "true", "yes", "on"):
        raise UserError(f"{ENV_DOWNLOAD} must be 1 or 0, got {os.environ[ENV_DOWNLOAD]!r}")
    return bool(download) or value in ("1", "true", "yes", "on")


def _progress(label: str):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    console = Console(stderr=True)
    # A live bar on a terminal, on rank 0 under torchrun; logs get the one "downloaded ..." line instead.
    show = console.is_terminal and os.environ.get("RANK", "0") == "0"
    return Progress(TextColumn(f"[bold]download {label}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console, disable=not show)


def _fetch(url: str, dest: Path, label: str, size: int) -> str:
    """Stream `url` into `dest`; returns the sha256 of what arrived."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "litevae"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(dest, "wb") as f, \
            _progress(label) as bar:
        total = int(response.headers.get("Content-Length") or 0) or size
        task = bar.add_task("download", total=total)
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            f.write(chunk)
            bar.advance(task, len(chunk))
    return digest.hexdigest()


def download_verified(url: str, dest: Path, expected_sha256: Optional[str], size: int = 0) -> str:
    """Fetch `url` to `dest` (atomically) when its sha256 equals `expected_sha256`; returns the sha256.
    `expected_sha256=None` accepts any bytes: only for files the caller validates itself (a small config)."""
    folder, label = dest.parent, dest.name
    nothing_left = f"nothing was kept in {folder}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {folder} to download {label} into: {err.strerror or one_line(err)}") from None
    with atomic_path(dest) as tmp:  # any exception below removes the temp file
        try:
            actual = _fetch(url, tmp, label, size)
        except urllib.error.HTTPError as err:
            raise UserError(f"cannot download {label} from {url}: HTTP {err.code} {err.reason}; {nothing_left}") from None
        except (urllib.error.URLError, OSError) as err:  # no route, refused, timed out, disk full
            reason = getattr(err, "reason", None) or err.strerror or one_line(err)
            raise UserError(f"cannot download {label} from {url}: {reason}; {nothing_left}") from None
        if expected_sha256 is not None and actual != expected_sha256:
            raise UserError(f"refused {label} from {url}: sha256 mismatch, expected {expected_sha256}, "
                            f"got {actual}; {nothing_left}")
    return actual
