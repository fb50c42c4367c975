"""Issue 25.1: every config value is checked against the model and the machine before any work.

Each bad value is refused at `--dry-run` with exit 2 and one line that names the key, where its value
came from and, for a bound, why; nothing is built for real (the model is checked on the meta device).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from litevae_cli.cli import app
from litevae_cli.config import resolve_config
from litevae_cli.config.checks import max_workers
from litevae_cli.errors import UserError

runner = CliRunner()


def _dry_run(tmp_path, *args):
    return runner.invoke(app, ["pretrain", "--preset", "demo", "--data", "sample", "--out", str(tmp_path / "run"),
                               "--dry-run", *args])


def _assert_one_line(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Usage" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("override, needles", [
    # The fault-injection run's cases (issue 25, item 1).
    ("model.decoder_kwargs.mults=[1,2]",
     ("config model (litevae-s + smc-decoder", "64x64 crop", "16x16 reconstruction", "(in --set)")),
    ("data.resolution=1000000", ("'data.resolution' must be <= 8192", "1000000", "(in --set)", "decoder activation")),
    ("train.steps=99999999999999999999999", ("'train.steps' must fit a 64-bit integer",)),
    ("train.steps=10000000000", ("'train.steps' must be <= 1000000000", "years of training")),
    ("model.encoder_kwargs.logvar_init=.nan", ("'model.encoder_kwargs.logvar_init' must be a finite number",)),
    ("model.encoder_kwargs.logvar_init=1e999", ("'model.encoder_kwargs.logvar_init' must be a finite number",)),
    ("loss.kl=.inf", ("'loss.kl' must be a finite number",)),
    ("optim.lr=1" + "0" * 400, ("'optim.lr' must be a finite number",)),  # an int past float's range
    # Every loss weight, batch and lr is bounded, with a reason.
    ("loss.wavelet=5000", ("'loss.wavelet' must be <= 1000", "drowns every other term")),
    ("distill.logvar=1e6", ("'distill.logvar' must be <= 1000",)),
    ("train.batch_size=1000000", ("'train.batch_size' must be <= 65536", "16-256")),
    ("optim.lr=10", ("'optim.lr' must be <= 1", "diverges")),
    ("data.rescale=[0.5,100]", ("'data.rescale' must be <= 4",)),
    # Architecture numbers that cannot be built or are absurdly large.
    ("model.decoder_kwargs.channels=-4", ("config model (litevae-s + smc-decoder", "cannot be built")),
    ("model.decoder_kwargs.channels=100000", ("billion parameters: at most 2 billion",)),
])
def test_bad_values_are_one_line_at_dry_run(tmp_path, override, needles):
    _assert_one_line(_dry_run(tmp_path, "--set", override), *needles)


def test_workers_are_bounded_by_the_machine(tmp_path):
    bound = max_workers()
    assert bound >= 32
    _assert_one_line(_dry_run(tmp_path, "--set", "data.workers=100000"),
                     f"'data.workers' must be <= {bound}", "CPU cores")
    _assert_one_line(_dry_run(tmp_path, "--workers", "100000"), "(in --workers)")


def test_steps_zero_is_one_line_not_a_usage_box(tmp_path):
    _assert_one_line(_dry_run(tmp_path, "--steps", "0"), "'train.steps' must be >= 1, got 0 (in --steps)")


def test_discriminator_crop_size_is_checked_at_dry_run(tmp_path):
    result = runner.invoke(app, ["finetune", "--preset", "b-finetune", "--data", "sample", "--out",
                                 str(tmp_path / "run"), "--dry-run", "--set", "data.resolution=200"])
    _assert_one_line(result, "config discriminator unet-disc-s", "multiple of 64", "got 200")


def test_grad_accum_and_the_distill_student_are_checked_at_dry_run(tmp_path):
    _assert_one_line(_dry_run(tmp_path, "--set", "train.grad_accum=3"), "'train.grad_accum' (3) must divide "
                     "train.batch_size (4)")
    result = runner.invoke(app, ["distill", "--teacher", "unused", "--data", "sample", "--out", str(tmp_path / "d"),
                                 "--dry-run", "--set", "distill.student_kwargs.wavelet=nope"])
    _assert_one_line(result, "config key 'distill.student_kwargs'", "cannot encode a 256x256 crop", "nope")


def test_good_values_still_resolve():
    cfg = resolve_config("demo", ["model.encoder_kwargs.logvar_init=-1e-1", "train.steps=1000000000",
                                  "loss.kl=1000", "data.workers=32"])
    assert cfg.train.steps == 10**9 and cfg.model.encoder_kwargs["logvar_init"] == -0.1
    # YAML 1.1 reads 1e-4 (no dot) as a string: inside builder kwargs too it is the number it means.
    cfg = resolve_config("demo", ["model.encoder_kwargs.logvar_init=-1e1"])
    assert cfg.model.encoder_kwargs["logvar_init"] == -10.0


def test_the_python_api_checks_the_same(tmp_path):
    with pytest.raises(UserError, match="16x16 reconstruction"):
        resolve_config("demo", ["model.decoder_kwargs.mults=[1,2]"])
