"""Issue 26 item 1: what the package needs on a bare GPU machine, and how the rest is carried there.

- Haar (the encoder's and the losses' wavelet) needs no PyWavelets: its filters are written out and equal
  pywt's bit for bit; the models, the losses and the training loop import and run with pywt (and every
  other optional package) unimportable; a non-Haar wavelet says in one line that it needs PyWavelets.
- The minimal set: the library (models, config, losses, training loop, runtime) imports with only torch,
  numpy, pillow, pyyaml and rich (and what those bring); the CLI adds typer.
- `scripts/gpu_wheels.py`: the carried set is the closure of the check's packages without the torch family,
  and installs offline from a wheels folder (the command scripts/gpu_check.sh runs).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offline_env import OPTIONAL, blocking_dir, probe_wheel_dir

ROOT = Path(__file__).resolve().parents[1]
# torch and what it brings or imports when present; pillow, numpy, pyyaml, rich (with rich's own dependencies).
ALLOWED = {"torch", "torchgen", "triton", "typing_extensions", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
           "filelock", "fsspec", "cuda", "cython_runtime", "numpy", "PIL", "yaml", "rich", "markdown_it", "mdurl",
           "pygments", "litevae_cli", "sitecustomize"}

PROBE = r"""
import json, sys
import torch
import litevae_cli.models, litevae_cli.training.loop, litevae_cli.config, litevae_cli.metrics.weights
from litevae_cli.models import create_model
from litevae_cli.models.wavelets import dwt2, idwt2, wavedec2, waverec2
from litevae_cli.training.losses import wavelet_loss
x = torch.rand(2, 3, 32, 32) * 2 - 1
enc = create_model("litevae-tiny", nz=4)
moments = enc(x)
rec = waverec2(wavedec2(x, 3))
err = ""
try:
    dwt2(x, "db2")
except ImportError as e:
    err = str(e)
tops = {m.split(".")[0] for m, v in sys.modules.items() if v is not None}
print(json.dumps({"shape": list(getattr(moments, "shape", [])), "roundtrip": float((rec - x).abs().max()),
                  "idwt": float((idwt2(dwt2(x)) - x).abs().max()), "wave": float(wavelet_loss(x, x.flip(-1))),
                  "db2": err, "pywt": "pywt" in sys.modules and sys.modules["pywt"] is not None,
                  "third_party": sorted(t for t in tops - set(sys.stdlib_module_names) if not t.startswith("_"))}))
"""


def test_haar_filters_equal_pywavelets_bit_for_bit():
    pywt = pytest.importorskip("pywt")
    from litevae_cli.models import wavelets

    lo, hi = pywt.Wavelet("haar").filter_bank[:2]
    assert wavelets._bank_1d("haar") == (tuple(lo), tuple(hi)) and wavelets._bank_1d("db1") == (tuple(lo), tuple(hi))
    assert wavelets._bank_1d("db2") == tuple(map(tuple, pywt.Wavelet("db2").filter_bank[:2]))


def test_library_runs_haar_without_pywavelets_on_the_minimal_set(tmp_path):
    block = blocking_dir(tmp_path / "blocked", OPTIONAL + ("tqdm", "dill", "torchvision"))
    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{ROOT}"}
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["roundtrip"] < 1e-5 and got["idwt"] < 1e-5 and got["wave"] > 0 and not got["pywt"]
    assert "needs PyWavelets" in got["db2"] and "Haar does not" in got["db2"]
    assert set(got["third_party"]) <= ALLOWED, set(got["third_party"]) - ALLOWED
    assert {"torch", "numpy", "yaml", "rich", "PIL"} <= set(got["third_party"])


def test_the_cli_adds_only_typer(tmp_path):
    block = blocking_dir(tmp_path / "blocked", tuple(n for n in OPTIONAL if n != "typer") + ("tqdm", "dill"))
    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{ROOT}"}
    code = ("import sys, litevae_cli.cli; tops = {m.split('.')[0] for m, v in sys.modules.items() if v is not None};"
            "print(sorted(t for t in tops - set(sys.stdlib_module_names) if not t.startswith('_')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    extra = set(eval(run.stdout.strip().splitlines()[-1])) - ALLOWED - {"torchvision"}
    assert "typer" in extra and extra <= {"typer", "click", "shellingham", "typing_inspection", "annotated_doc"}, extra


def test_the_carried_wheels_are_the_check_set_without_torch():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_wheels
    finally:
        sys.path.pop(0)
    pins = gpu_wheels.closure()
    assert {"pyyaml", "rich", "pytest", "pywavelets", "lpips", "tensorboard", "webdataset", "diffusers"} <= set(pins)
    assert not {"torch", "torchvision", "numpy", "pillow", "triton"} & set(pins)
    assert not [n for n in pins if n.startswith("nvidia-")]
    lean = gpu_wheels.closure(tuple(r for r in gpu_wheels.ROOTS if r != "lpips"))
    assert "lpips" not in lean and "scipy" not in lean and "pyyaml" in lean
    assert gpu_wheels.requirements({"a": "1.0"}, True) == "a==1.0\n"


def test_wheels_install_offline_from_the_folder(tmp_path):
    wheels = probe_wheel_dir(tmp_path / "wheels")
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/nothing"}  # any index use would fail
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_wheels.py"), "install", "--dest", str(wheels),
                          "--target", str(tmp_path / "site")], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "site" / "litevae_probe" / "__init__.py").read_text() == "VALUE = 42\n"
    # A requirement no wheel satisfies (as with wheels for another Python): the others still install, it is named.
    (wheels / "requirements.txt").write_text("litevae-absent==1.0\nlitevae_probe==0.1\n")
    part = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_wheels.py"), "install", "--dest", str(wheels),
                           "--target", str(tmp_path / "site2")], capture_output=True, text=True, env=env, timeout=120)
    assert part.returncode == 1 and "not installed: litevae-absent==1.0" in part.stdout
    assert (tmp_path / "site2" / "litevae_probe" / "__init__.py").is_file()
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_wheels.py"), "install", "--dest",
                              str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "make gpu-wheels" in missing.stderr and missing.stderr.count("\n") == 1

