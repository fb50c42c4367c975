"""A bad option value is one line and exit 2 (cli.help_style), like every other bad input; a malformed
command line keeps Typer's usage box."""

import pytest
from typer.testing import CliRunner

from litevae_cli.cli import app


@pytest.mark.parametrize("args, option", [
    (["pretrain", "--preset", "demo", "--data", "sample", "--out", "{tmp}/run", "--batch-size", "0"], "--batch-size"),
    (["eval", "{tmp}/model.pt", "--workers", "-1"], "--workers"),
    (["encode-dataset", "{tmp}/model.pt", "--data", "sample", "--out", "{tmp}/lat", "--limit", "0"], "--limit"),
])
def test_a_bad_option_value_is_one_line(tmp_path, args, option):
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: Invalid value for '{option}'") and "Traceback" not in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "lat").exists()


def test_an_unknown_option_keeps_the_usage_box():
    result = CliRunner().invoke(app, ["pretrain", "--no-such-option"])
    assert result.exit_code == 2 and "Usage: litevae pretrain" in result.output
