"""Issue 25.10: library warnings that are not for the user are dropped; the others are one line.

Python prints a warning as two lines (the message, then the library's source line): the CLI installs
`cli.cli_warnings` before every command, which drops `cli.NOISE` (e.g. torch's pickle-protocol note on a
file it refuses anyway) and prints anything else as `warning: <message>`.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import warnings

from typer.testing import CliRunner

from litevae_cli.cli import _one_line_warning, app


def test_a_refused_plain_pickle_gives_one_line_and_no_torch_warning(tmp_path):
    """The fault-injection case: a plain pickle given as MODEL made torch print a two-line UserWarning."""
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"format": "litevae-checkpoint", "version": 2}, protocol=4))
    proc = subprocess.run([sys.executable, "-m", "litevae_cli", "export", str(plain), str(tmp_path / "o.safetensors")],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Warning" not in proc.stderr and "pickle protocol" not in proc.stderr


def test_user_warnings_are_one_line_and_noise_is_dropped(tmp_path):
    """PIL's own decompression-bomb check, a multi-line warning and torch's unpickler note, in a process
    that installed the CLI's policy the way `litevae` does (`cli.main`)."""
    script = textwrap.dedent(f"""
        import pickle, warnings, torch
        from PIL import Image
        from litevae_cli.cli import cli_warnings
        cli_warnings()
        Image.MAX_IMAGE_PIXELS = 100  # a 12x12 image is then over PIL's limit (but under twice it: a warning)
        Image.new("L", (12, 12)).save({str(tmp_path / "big.png")!r})
        Image.open({str(tmp_path / "big.png")!r})
        warnings.warn("first\\n  second")
        with open({str(tmp_path / "p.pt")!r}, "wb") as f:
            pickle.dump({{"a": torch.zeros(1).tolist()}}, f, protocol=4)
        try:
            torch.load({str(tmp_path / "p.pt")!r}, weights_only=True)
        except Exception:
            pass
        from diffusers.utils import logging
        print(logging.get_verbosity() == logging.ERROR)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"  # diffusers' "You should probably TRAIN this model" logger: errors only
    assert proc.stderr.strip().splitlines() == [
        "warning: Image size (144 pixels) exceeds limit of 100 pixels, could be decompression bomb DOS attack.",
        "warning: first second"]


def test_every_command_installs_the_policy():
    with warnings.catch_warnings():
        warnings.showwarning = warnings._showwarning_orig  # as in a fresh process
        result = CliRunner().invoke(app, ["models"])
        assert result.exit_code == 0 and warnings.showwarning is _one_line_warning
