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
