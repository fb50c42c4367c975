"""Carry the GPU check's Python dependencies to a machine without package registries (issue 26 item 1).

`download` (`make gpu-wheels`, on a machine with the registries): the wheels of every package the check can
use that a CUDA machine's torch does not bring, into `wheels/` inside the tree (git-ignored), with
`wheels/requirements.txt`. The set is the dependency closure, read from this environment's installed
metadata, of ROOTS, minus torch, torchvision and what they bring (numpy, pillow, sympy, nvidia-*, ...);
each pinned to the version installed here (the one the tests pass with). `--python-version` / `--platform`
download for another interpreter (then unpinned: pip picks each package's newest wheel for it).
`--lean` leaves lpips out (and with it scipy, 34 of the 77 MiB): the bench then times its same-shape LPIPS
stand-in, and the set fits a 64 MiB carry limit.
`install` (run by scripts/gpu_check.sh on the GPU machine): `pip install --no-index --find-links wheels/
-r wheels/requirements.txt`, nothing fetched from anywhere.

    python scripts/gpu_wheels.py download [--dest wheels] [--lean]
        [--python-version 3.10 --platform manylinux2014_x86_64]
    python scripts/gpu_wheels.py install [--dest wheels] [--target DIR]
    python scripts/gpu_wheels.py list [--lean]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the check imports beyond torch: the minimal set's pyyaml and rich, pytest for the GPU tests, and the
# optional packages that turn its skips into measurements (the CLI's typer too).
ROOTS = ("pyyaml", "rich", "typer", "pytest", "pywavelets", "lpips", "tensorboard", "webdataset", "diffusers",
         "safetensors", "psutil")
# On the GPU machine with torch: torch, torchvision and their own dependencies.
TORCH_FAMILY = ("torch", "torchvision", "triton", "numpy", "pillow", "sympy", "mpmath", "networkx", "jinja2",
                "markupsafe", "filelock", "fsspec", "typing-extensions", "setuptools")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _excluded(name: str) -> bool:
    return name in TORCH_FAMILY or name.startswith(("nvidia-", "cuda-"))


def closure(roots=ROOTS) -> dict[str, str]:
    """{canonical name: installed version} of roots and everything they require here (markers evaluated
    for this interpreter, extras not followed), minus the torch family."""
    from packaging.requirements import Requirement  # pip's vendored copy is not public; packaging ships with pytest

    seen: dict[str, str] = {}
    todo = [canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or _excluded(name):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is not installed here; run make install first (the wheels are pinned "
                             "to this environment's versions)")
        seen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonical(req.name))
    return dict(sorted(seen.items()))


def requirements(pins: dict[str, str], pinned: bool) -> str:
    return "".join(f"{n}=={v}\n" if pinned else f"{n}\n" for n, v in pins.items())


def download(dest: Path, python_version: str | None, platform: str | None, roots=ROOTS) -> int:
    pins = closure(roots)
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    pinned = python_version in (None, local)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text(requirements(pins, pinned))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
           "-r", str(dest / "requirements.txt")]
    if python_version:
        cmd += ["--python-version", python_version]
    if platform:
        cmd += ["--platform", platform]
    print(f"downloading {len(pins)} wheels into {dest}/: {' '.join(pins)}", flush=True)
    rc = subprocess.call(cmd)
    if rc == 0:
        size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
        print(f"{dest}/: {len(list(dest.glob('*.whl')))} wheels, {size:.0f} MiB; on the GPU machine: "
              "bash scripts/gpu_check.sh installs them (or: python scripts/gpu_wheels.py install)", flush=True)
    return rc


def install_command(dest: Path, target: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(dest),
           "-r", str(dest / "requirements.txt")]
    return cmd + (["--target", str(target)] if target else [])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("download", "install", "list"))
    p.add_argument("--dest", type=Path, default=ROOT / "wheels")
    p.add_argument("--python-version", default=None, help="download for this Python (e.g. 3.10)")
    p.add_argument("--platform", default=None, help="download for this platform (e.g. manylinux2014_x86_64)")
    p.add_argument("--lean", action="store_true", help="without lpips and scipy (the bench's LPIPS stand-in runs)")
    p.add_argument("--target", type=Path, default=None, help="install into this folder instead of the environment")
    args = p.parse_args()
    roots = tuple(r for r in ROOTS if not (args.lean and r == "lpips"))
    if args.action == "list":
        print(requirements(closure(roots), True), end="")
        return 0
    if args.action == "download":
        return download(args.dest, args.python_version, args.platform, roots)
    if not (args.dest / "requirements.txt").is_file():
        raise SystemExit(f"error: {args.dest}/requirements.txt not found; run make gpu-wheels first")
    return install(args.dest, args.target)


def install(dest: Path, target: Path | None = None) -> int:
    """All at once; if that fails (e.g. wheels built for another Python), one by one, so every package whose
    wheels fit still installs; the rest are named."""
    if subprocess.call(install_command(dest, target)) == 0:
        return 0
    lines = [ln.strip() for ln in (dest / "requirements.txt").read_text().splitlines() if ln.strip()]
    print(f"the set did not install at once; trying its {len(lines)} packages one by one", flush=True)
    failed = []
    for line in lines:
        cmd = install_command(dest, target)
        cmd[cmd.index("-r"):cmd.index("-r") + 2] = [line]
        if subprocess.call(cmd, stderr=subprocess.DEVNULL) != 0:
            failed.append(line)
    print(f"not installed: {' '.join(failed) or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
