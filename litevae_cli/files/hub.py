"""A diffusers VAE folder from the Hugging Face Hub, fetched only when asked and verified file by file.

A MODEL argument (`--from`, `--teacher` too) of the form `owner/name` or `owner/name/subfolder` that is no
local path names a Hub repository. With downloads on (`--download-weights`, or LITEVAE_DOWNLOAD_WEIGHTS=1:
`files.download.requested`) `fetch_vae_folder` downloads its `config.json` and
`diffusion_pytorch_model.safetensors` from `$HF_ENDPOINT` (default https://huggingface.co) at revision
`$LITEVAE_HUB_REVISION` (default main) into `<cache>/<owner>--<name>[--<subfolder>]`, where `<cache>` is
`$LITEVAE_HUB_CACHE`, else `$HF_HOME/litevae` (default ~/.cache/huggingface/litevae). Without them it
stays a one-line refusal that says how to download it (`diffusers_folder.hub_download_hint`).

Verification: the Hub stores weights with Git LFS and declares each LFS file's sha256 in the `X-Linked-Etag`
header of its resolve URL (read with a HEAD request that does not follow the redirect to the CDN); the
safetensors bytes are hashed as they arrive and kept only when they match (`files.download`). A server that
declares no sha256 is refused. `config.json` is a plain Git file with no declared sha256: it is checked by
reading it as an AutoencoderKL config before anything is used. The folder records what was fetched in
`litevae-download.json` (URLs, revision, sha256). A folder fetched before is used as it is.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from litevae_cli.errors import UserError, one_line
from litevae_cli.files.atomic import atomic_path
from litevae_cli.files.diffusers_folder import CONFIG_NAME, WEIGHTS_NAME, is_diffusers_folder, read_config
from litevae_cli.files.download import TIMEOUT_S, download_verified

RECORD_NAME = "litevae-download.json"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+)?")


def is_hub_id(name) -> bool:
    """`owner/name` or `owner/name/subfolder` that is no local path."""
    text = str(name)
    return (not Path(text).exists() and Path(text).suffix not in (".pt", ".safetensors")
            and _HUB_ID.fullmatch(text) is not None)


def download_hint(name) -> str:
    """How to get a Hub VAE when downloads are off (nothing is fetched then)."""
    return (f"{name} names a Hugging Face Hub repository: rerun with --download-weights (or "
            f"LITEVAE_DOWNLOAD_WEIGHTS=1) to fetch and verify it (a pipeline repository: {name}/vae), or download it "
            f"yourself: huggingface-cli download {name} {CONFIG_NAME} {WEIGHTS_NAME} --local-dir DIR, then pass DIR")


def cache_dir() -> Path:
    explicit = os.environ.get("LITEVAE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "litevae"


def _resolve_url(repo: str, revision: str, path: str) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{repo}/resolve/{urllib.parse.quote(revision, safe='')}/{urllib.parse.quote(path)}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the Hub's own response (with X-Linked-Etag) is what we want, not the CDN's


def declared_sha256(url: str) -> str | None:
    """The LFS sha256 the Hub declares for `url` (X-Linked-Etag), or None."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "litevae"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        response = opener.open(request, timeout=TIMEOUT_S)
        headers = response.headers
    except urllib.error.HTTPError as err:  # a 302 to the CDN arrives here: its headers hold the hash
        if err.code not in (301, 302, 303, 307, 308):
            raise UserError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
        headers = err.headers
    except (urllib.error.URLError, OSError) as err:
        raise UserError(f"cannot download {url}: {getattr(err, 'reason', None) or one_line(err)}") from None
    value = (headers.get("X-Linked-Etag") or "").strip().strip('"').removeprefix("W/").strip('"')
    return value.lower() if re.fullmatch(r"[0-9a-fA-F]{64}", value) else None


def fetch_vae_folder(hub_id: str) -> Path:
    """Download (once) and verify the VAE folder of `hub_id`; returns the local folder (module docstring)."""
    parts = str(hub_id).split("/")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    revision = os.environ.get("LITEVAE_HUB_REVISION", "main")
    folder = cache_dir() / "--".join(parts)
    if is_diffusers_folder(folder) and (folder / RECORD_NAME).is_file():
        return folder
    record = {"repo": repo, "subfolder": sub, "revision": revision, "files": {}}
    try:
        _fetch_files(repo, sub, revision, folder, record)
    except BaseException:
        for name in (CONFIG_NAME, WEIGHTS_NAME):  # all or nothing: no half folder is ever taken for a VAE
            (folder / name).unlink(missing_ok=True)
        raise
    with atomic_path(folder / RECORD_NAME) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    print(f"downloaded {hub_id} ({WEIGHTS_NAME} sha256 {record['files'][WEIGHTS_NAME]['sha256'][:12]}..., "
          f"verified) into {folder}", flush=True)
    return folder


def _fetch_files(repo: str, sub: str, revision: str, folder: Path, record: dict) -> None:
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        url = _resolve_url(repo, revision, f"{sub}/{name}" if sub else name)
        expected = declared_sha256(url) if name == WEIGHTS_NAME else None
        if name == WEIGHTS_NAME and expected is None:
            raise UserError(f"refused {url}: the server declares no sha256 for it (X-Linked-Etag), so it cannot "
                            f"be verified; nothing was kept in {folder}")
        sha = download_verified(url, folder / name, expected)
        if name == CONFIG_NAME:
            read_config(folder, classes=("AutoencoderKL",))  # a JSON AutoencoderKL config, or one line
        record["files"][name] = {"url": url, "sha256": sha, "verified": expected is not None}
