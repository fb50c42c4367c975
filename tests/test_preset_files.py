"""Issue 25.2: a preset file that is not plain UTF-8 YAML data is one line naming the file and the line.

Binary and non-UTF-8 files, duplicate keys at any depth (PyYAML alone keeps the last one silently),
anchors/aliases (an alias bomb expands exponentially), and nesting past the recursion limit.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.config import dump_config, load_config, resolve_config
from litevae_cli.errors import UserError

runner = CliRunner()
HEAD = "name: x\nphase: pretrain\nmodel: {encoder: litevae-tiny, decoder: smc-decoder-tiny, nz: 4}\n"


def _dry_run(preset, *args):
    return runner.invoke(app, ["pretrain", "--preset", str(preset), "--data", "sample", "--out", "unused-out",
                               "--dry-run", *args])


def _assert_one_line(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("content, needles", [
    (bytes(range(256)) * 2, ("line 1", "binary file")),
    (HEAD.encode() + b"# caf\xe9\n", ("line 4", "not UTF-8 text", "0xe9")),
    # duplicate top-level section: `train:` twice (the second used to replace the first, exit 0)
    ((HEAD + "train:\n  steps: 3\ntrain:\n  batch_size: 4\n").encode(), ("line 6", "duplicate key 'train'",
                                                                        "first on line 4")),
    # duplicate key deep inside
    ((HEAD + "train:\n  steps: 3\n  batch_size: 4\n  steps: 5\n").encode(), ("line 7", "duplicate key 'steps'")),
    ((HEAD + "loss: {l1: 1.0, l1: 2.0}\ntrain: {steps: 3}\n").encode(), ("line 4", "duplicate key 'l1'")),
    # an alias bomb: 9 levels of 9 aliases each would be 387 M strings
    (("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
      + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))).encode(),
     ("line 2", "alias *a is not allowed")),
    ((HEAD + "train: {steps: 3}\nlog:\n  every: &n 5\n  sample_every: *n\n").encode(), ("line 7", "alias *n")),
    (("[" * 50_000).encode(), ("nested too deeply",)),
    ((HEAD + "train:\n  steps: [\n").encode(), ("line 6",)),
])
def test_bad_preset_files_are_one_line(tmp_path, content, needles):
    preset = tmp_path / "bad.yaml"
    preset.write_bytes(content)
    _assert_one_line(_dry_run(preset), str(preset), *needles)


def test_a_huge_file_is_refused_unread(tmp_path):
    preset = tmp_path / "huge.yaml"
    preset.write_bytes(b"# padding\n" * 200_000)
    _assert_one_line(_dry_run(preset), "larger than 1 MB")


def test_set_values_are_parsed_as_strictly():
    with pytest.raises(UserError, match="duplicate key 'a'"):
        load_config("demo", ["model.decoder_kwargs={a: 1, a: 2}"])


def test_a_good_preset_and_a_dumped_config_still_load(tmp_path):
    preset = tmp_path / "ok.yaml"
    preset.write_text(HEAD + "train:\n  steps: 3\n  batch_size: 4\n")
    cfg = resolve_config(str(preset))
    assert cfg.train.steps == 3 and cfg.train.batch_size == 4
    shared = [0.5, 0.9]  # one object met twice: written twice, never as an anchor and an alias
    cfg.optim.betas = cfg.optim.disc_betas = shared
    dump_config(cfg, tmp_path / "config.yaml", run={"data": "sample"})
    text = (tmp_path / "config.yaml").read_text()
    assert "&" not in text and "*" not in text
    assert load_config(str(tmp_path / "config.yaml")).optim.disc_betas == shared
    assert yaml.safe_load(text)["train"]["steps"] == 3


def test_binary_preset_in_a_real_process(tmp_path):
    """The fault-injection case as it was run: a real `litevae` process, stderr one line, exit 2."""
    preset = tmp_path / "bin.yaml"
    preset.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    proc = subprocess.run([sys.executable, "-m", "litevae_cli", "pretrain", "--preset", str(preset), "--data",
                           "sample", "--out", str(tmp_path / "out"), "--dry-run"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    want = f"error: preset {preset} line 3: a binary file (NUL byte), not YAML text"
    assert proc.stderr.strip().splitlines() == [want]
