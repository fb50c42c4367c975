"""`litevae models`, `--version` and `--help` through Typer's CliRunner and a real subprocess."""

import json
import subprocess
import sys
import time

from typer.testing import CliRunner

from litevae_cli.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    from importlib.metadata import version

    assert result.exit_code == 0 and result.stdout.strip() == f"litevae {version('litevae')}"


def test_models_json_lists_every_required_name_with_counts():
    result = runner.invoke(app, ["models", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in ["litevae-s", "litevae-b", "litevae-m", "litevae-l", "sd-vae-encoder", "smc-decoder",
                 "sd-vae-decoder", "patchgan", "gigagan", "unet-disc-s", "unet-disc-m", "unet-disc-l"]:
        assert {"name", "kind", "params", "gflops_256"} <= set(rows[name])
    assert abs(rows["litevae-b"]["params"] / 6.75e6 - 1) < 0.02
    # 2 x MAC: open-LiteVAE's 37.4 G (MACs) for litevae-b and 137 G for the SD-VAE encoder
    assert abs(rows["litevae-b"]["gflops_256"] / (2 * 37.4) - 1) < 0.03
    assert abs(rows["sd-vae-encoder"]["gflops_256"] / (2 * 137) - 1) < 0.03
    # open-LiteVAE's GigaGAN discriminator: 14.38 M parameters, 3.23 G MACs
    assert abs(rows["gigagan"]["params"] / 14.38e6 - 1) < 0.03
    assert abs(rows["gigagan"]["gflops_256"] / (2 * 3.23) - 1) < 0.05


def test_models_table_and_bad_kind():
    result = runner.invoke(app, ["models", "--kind", "decoder"])
    assert result.exit_code == 0 and "smc-decoder" in result.stdout and "litevae-b" not in result.stdout
    bad = runner.invoke(app, ["models", "--kind", "vocoder"])
    assert bad.exit_code == 2 and "--kind must be one of" in bad.output and "Traceback" not in bad.output


def test_help_is_fast_and_does_not_import_torch():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "litevae_cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "models" in out.stdout
    assert time.perf_counter() - start < 2.0
    probe = subprocess.run([sys.executable, "-c", "import litevae_cli.cli, sys; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False"


def test_models_prints_cached_figures_fast_without_torch_and_hides_tiny_variants():
    code = ("import sys, time; from typer.testing import CliRunner; from litevae_cli.cli import app; "
            "t = time.perf_counter(); r = CliRunner().invoke(app, ['models']); "
            "print(r.exit_code, 'torch' in sys.modules, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    code_, torch_loaded, seconds = out.stdout.split()
    assert (code_, torch_loaded) == ("0", "False") and float(seconds) < 2.0, out.stdout + out.stderr[-2000:]
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "litevae_cli", "models"], capture_output=True, text=True,
                         env={**__import__("os").environ, "COLUMNS": "80"}, timeout=60)
    assert run.returncode == 0 and time.perf_counter() - start < 2.0
    names = {r["name"] for r in json.loads(runner.invoke(app, ["models", "--all", "--json", "-"]).stdout)}
    tiny = {n for n in names if n.endswith("-tiny")}
    assert tiny and all(n in run.stdout.split() for n in names - tiny)  # whole words at 80 columns
    assert not any(n in run.stdout for n in tiny)
    shown = runner.invoke(app, ["models", "--all"], env={"COLUMNS": "80"}).stdout
    assert all(n in shown.split() for n in names)


def test_cached_figures_match_the_registry():
    """`litevae models` prints cached rows: regenerate with `python -m litevae_cli.cli.model_figures`."""
    from litevae_cli.cli import model_figures
    from litevae_cli.models.registry import KINDS

    measured = model_figures.measured_rows()
    cached = model_figures.ROWS
    assert model_figures.KINDS == KINDS
    assert [r["name"] for r in cached] == [r["name"] for r in measured], "stale: python -m litevae_cli.cli.model_figures"
    for c, m in zip(cached, measured):
        assert {k: c[k] for k in c if k != "gflops_256"} == {k: m[k] for k in m if k != "gflops_256"}, c["name"]
        assert abs(c["gflops_256"] - m["gflops_256"]) <= 1e-9 * m["gflops_256"], c["name"]


def test_flags_show_no_value_and_usage_names_model():
    help_ = runner.invoke(app, ["pretrain", "--help"], env={"COLUMNS": "160"}).stdout
    assert "--dry-run" in help_ and "--no-dry-run" in help_ and "<bool>" not in help_
    assert "--download-weights" in help_ and "--no-download-weights" in help_
    usage = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "160"}).stdout
    assert "[OPTIONS] MODEL" in usage and "{model}" not in usage and "<bool>" not in usage
    assert "--ema" in usage and "--no-ema" in usage
    rec = runner.invoke(app, ["reconstruct", "--help"], env={"COLUMNS": "160"}).stdout
    assert "[OPTIONS] MODEL IMAGES..." in rec and "--no-native" in rec
    missing = runner.invoke(app, ["eval"])
    assert missing.exit_code == 2 and "'MODEL'" in missing.output
