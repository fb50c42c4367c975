"""A built wheel carries every shipped preset (top-level presets/ packaged as litevae_cli.presets)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_presets(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("litevae-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (ROOT / "presets").glob("*.yaml"))
    assert shipped, "no presets in presets/"
    for name in shipped:
        assert f"litevae_cli/presets/{name}" in names
    assert "litevae_cli/models/litevae_encoder.py" in names
    assert {"litevae_cli/runtime/__init__.py", "litevae_cli/runtime/process_group.py"} <= names  # a package now
