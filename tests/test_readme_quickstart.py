"""README "Train on your own images": the five quick-start commands, read from README.md verbatim, run on a
folder of photos with the tiny model (extras appended: tiny sizes, 2 steps, CPU, and `--set loss.lpips=0`, the
README's offline form, since tests have no network); each exits 0 and writes the files the README's table
lists as written always (and TensorBoard's, on in the B presets)."""

import shlex
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from litevae_cli.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ("--steps 2 --batch-size 2 --workers 0 --device cpu --precision fp32 --set model.encoder=litevae-tiny "
        "--set model.decoder=smc-decoder-tiny --set model.nz=4 --set data.resolution=32 --set loss.lpips=0")
EXTRAS = {"pretrain": TINY, "finetune": TINY + " --set discriminator.name=patchgan-tiny",
          "eval": "--resolution 32 --device cpu", "encode-dataset": "--resolution 32 --workers 0 --device cpu"}
OUTS = {"pretrain": "runs/mine-pretrain", "finetune": "runs/mine", "eval": "runs/mine/eval", "encode-dataset": "latents/mine"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _between(text: str, tag: str) -> str:
    return text.split(f"<!-- {tag} -->")[1].split(f"<!-- /{tag} -->")[0]


def quickstart_commands() -> list[str]:
    lines = [ln for ln in _between(README.read_text(), "quickstart").replace("\\\n", " ").splitlines()
             if ln.strip() and not ln.startswith(("#", "```"))]
    return lines


def listed_files() -> list[tuple[str, str, str]]:
    """(command, path pattern, when) per row of the README's file table."""
    rows = []
    for line in _between(README.read_text(), "files").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            for command in cells[0].split(", "):
                rows += [(command, p.strip("`"), cells[2]) for p in cells[1].split(", ")]
    return rows


def test_the_quick_start_runs_verbatim_and_writes_the_listed_files(tmp_path, monkeypatch):
    commands = quickstart_commands()
    assert [c.split()[1] for c in commands[1:]] == ["pretrain", "finetune", "eval", "encode-dataset"]
    assert not commands[0].startswith("litevae")
    monkeypatch.chdir(tmp_path)

    def no_network(*a, **k):
        raise AssertionError("the quick start tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    rng = np.random.default_rng(0)
    (tmp_path / "photos" / "trip").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "photos" / "trip" / f"IMG_{i:04d}.JPG")
    subprocess.run(["bash", "-c", commands[0]], check=True, cwd=tmp_path)  # step 1: every 10th photo held out
    assert sorted(p.name for p in (tmp_path / "photos-holdout").iterdir()) == ["IMG_0009.JPG"]

    runner = CliRunner()
    for line in commands[1:]:
        args = shlex.split(line)[1:]
        res = runner.invoke(app, args + shlex.split(EXTRAS[args[0]]))
        assert res.exit_code == 0, f"{line}\n{res.output}"
    rows = listed_files()
    assert {c for c, _, _ in rows} == set(OUTS)
    checked = [(c, p) for c, p, when in rows if when in ("always", "`--json`") or "B presets" in when]
    for command, pattern in checked:
        path = pattern.replace("OUT", OUTS[command]).replace("NAME", OUTS["eval"])
        assert list(tmp_path.glob(path)), f"README lists {pattern} for {command}, not written: {path}"
    assert len(checked) >= 16
