"""A Python environment with some installed packages made unimportable, for the offline GPU-check tests.

`blocking_dir(tmp, names)` writes a `sitecustomize.py` that sets `sys.modules[name] = None` for each name:
Python's documented way to make `import name` raise ModuleNotFoundError while `importlib.util.find_spec(name)`
returns None, exactly as for a package that is not installed. Put the folder first on PYTHONPATH: every
interpreter started with that environment (pytest, the bench's child processes, loader workers) runs it.
"""

from __future__ import annotations

from pathlib import Path

# The optional dependencies issue 26 names (clean-fid's import name is cleanfid), the SD-VAE peer's
# diffusers, and the scientific stack that lpips and clean-fid pull in.
OPTIONAL = ("pywt", "lpips", "tensorboard", "webdataset", "cleanfid", "diffusers", "scipy", "skimage",
            "safetensors", "psutil", "huggingface_hub", "typer")


def blocking_dir(folder: Path, names=OPTIONAL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"for _name in {tuple(names)!r}:\n"
        "    sys.modules[_name] = None  # import raises ModuleNotFoundError; find_spec returns None\n")
    return folder


def probe_wheel_dir(folder: Path, name: str = "litevae_probe", version: str = "0.1") -> Path:
    """A folder laid out as `make gpu-wheels` leaves wheels/: one tiny pure-Python wheel and requirements.txt."""
    import base64
    import hashlib
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: offline_env\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    (folder / "requirements.txt").write_text(f"{name}=={version}\n")
    return folder
