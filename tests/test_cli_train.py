"""`litevae pretrain` / `litevae finetune`: what the CLI hands to the library, --dry-run, one-line errors,
and SIGTERM in a real subprocess (checkpoint written, rerun resumes)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import litevae_cli.training.loop
from litevae_cli.cli import app

runner = CliRunner()


def _one_line_error(result):
    text = result.output.strip()
    return result.exit_code != 0 and "Traceback" not in result.output and len(text.splitlines()) == 1


def test_commands_pass_their_options_to_one_library_call(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(litevae_cli.training.loop, "run", lambda *a, **kw: calls.append((a, kw)) or 0)
    common = ["--data", "sample", "--out", str(tmp_path / "o"), "--steps", "5",
              "--batch-size", "2", "--device", "cpu", "--precision", "fp32", "--set", "optim.lr=2e-4",
              "--set", "log.every=1", "--workers", "0", "--weights-dir", str(tmp_path)]
    assert runner.invoke(app, ["pretrain", "--preset", "demo", *common]).exit_code == 0
    assert runner.invoke(app, ["finetune", "--preset", "demo-finetune", *common, "--from", "a.pt"]).exit_code == 0
    (a_args, a_kw), (b_args, b_kw) = calls
    rt, cfg, data, out = a_args  # the opened runtime and the config resolved once, flags and --set applied
    assert rt.device.type == "cpu" and rt.precision == "fp32" and (data, out) == ("sample", tmp_path / "o")
    assert (cfg.name, cfg.phase, cfg.train.steps, cfg.train.batch_size, cfg.optim.lr, cfg.log.every,
            cfg.data.workers) == ("demo", "pretrain", 5, 2, 2e-4, 1, 0)
    assert a_kw == dict(init_from=None, weights_dir=tmp_path, download_weights=False, use_ema=True)
    assert b_args[1].phase == "finetune" and b_kw == {**a_kw, "init_from": __import__("pathlib").Path("a.pt")}
    # the phase is the preset's: a preset of the other phase is refused before any work
    result = runner.invoke(app, ["finetune", "--preset", "demo", *common, "--from", "a.pt"])
    assert _one_line_error(result) and "pretrain preset" in result.output and len(calls) == 2
    # --no-ema: --from's raw weights
    assert runner.invoke(app, ["finetune", "--preset", "demo-finetune", *common, "--from", "a.pt",
                               "--no-ema"]).exit_code == 0
    assert calls[-1][1]["use_ema"] is False


def test_help_shows_examples():
    for command in ("pretrain", "finetune"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Examples" in result.output and "--preset" in result.output


def test_dry_run_prints_the_resolved_b_recipe_and_writes_nothing(tmp_path):
    out = tmp_path / "X"
    result = runner.invoke(app, ["pretrain", "--preset", "b-pretrain", "--data", str(tmp_path), "--out", str(out),
                                 "--dry-run"])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.stdout)
    assert cfg["model"]["encoder"] == "litevae-b" and cfg["model"]["decoder"] == "smc-decoder"
    assert cfg["data"]["resolution"] == 128 and cfg["train"]["steps"] == 100000
    assert cfg["optim"]["betas"] == [0.5, 0.9] and cfg["discriminator"]["name"] is None
    assert not out.exists()
    # Flags override the preset in the printed config.
    result = runner.invoke(app, ["pretrain", "--preset", "b-pretrain", "--data", str(tmp_path), "--out", str(out),
                                 "--dry-run", "--steps", "7", "--set", "optim.lr=3e-4"])
    cfg = yaml.safe_load(result.stdout)
    assert cfg["train"]["steps"] == 7 and cfg["optim"]["lr"] == 3e-4


@pytest.mark.parametrize("argv,message", [
    (["pretrain", "--preset", "demo", "--data", "sample", "--set", "train.stepz=3"], "train.stepz"),
    (["pretrain", "--preset", "demo", "--data", "sample", "--set", "train.steps=many"], "train.steps"),
    (["pretrain", "--preset", "no-such-preset", "--data", "sample"], "unknown preset"),
    (["pretrain", "--preset", "demo", "--data", "/no/such/dir", "--device", "cpu"], "does not exist"),
    (["finetune", "--preset", "demo-finetune", "--data", "sample", "--device", "cpu"], "--from"),
    (["pretrain", "--preset", "demo-finetune", "--data", "sample", "--device", "cpu"], "finetune --from"),
    (["pretrain", "--preset", "demo", "--data", "sample", "--device", "cpu", "--precision", "fp16"], "fp16"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, argv, message):
    result = runner.invoke(app, [*argv, "--out", str(tmp_path / "run")])
    assert _one_line_error(result), result.output
    assert message in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_the_rerun_resumes(tmp_path, tiny_preset):
    preset = tiny_preset()  # conftest.TINY_PRESET: endless, a metrics line every step
    data = tmp_path / "images"
    data.mkdir()
    for i in range(3):  # small files: decoding the sample set's large photos would dominate the run
        Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(data / f"{i}.png")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "litevae_cli", "pretrain", "--preset", str(preset), "--data", str(data),
           "--out", str(out), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().strip()) and time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM received" in output and "Traceback" not in output
    step = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert step >= 1 and json.loads(metrics.read_text().splitlines()[-1])["step"] <= step

    rerun = subprocess.run([*cmd, "--steps", str(step + 1)], capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"from {out / 'checkpoints' / 'last.pt'} at step {step}" in rerun.stdout
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == step + 1
