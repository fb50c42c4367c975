"""Checkpoint save/load: atomic writes, safe loading, EMA preference, run-dir resolution, export."""

import pickle

import pytest
import torch

from litevae_cli.files.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, latest_checkpoint, load_checkpoint, save_atomic)
from litevae_cli.files.export import export_model
from litevae_cli.files.model_file import load_autoencoder
from litevae_cli.errors import UserError
from litevae_cli.models import build_autoencoder


def _fake_checkpoint(tmp_path, with_ema=True):
    torch.manual_seed(0)
    ae = build_autoencoder("litevae-tiny", "smc-decoder-tiny", nz=4)
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in ae.state_dict().items()}
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_spec": ae.spec.to_dict(), "model": ae.state_dict(),
            "ema": ema if with_ema else None, "step": 7, "config": {"a": 1}}
    return ae, save_atomic(ckpt, tmp_path / "run" / "checkpoints" / "last.pt")


def test_run_dir_resolves_to_last_and_ema_is_preferred(tmp_path):
    ae, path = _fake_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "run") == path
    loaded = load_autoencoder(tmp_path / "run")
    assert loaded.used_ema and loaded.step == 7 and "EMA" in loaded.describe()
    p_ema = next(iter(loaded.model.parameters()))
    assert torch.allclose(p_ema, next(iter(ae.parameters())) + 1.0)
    raw = load_autoencoder(path, use_ema=False)
    assert not raw.used_ema and torch.equal(next(iter(raw.model.parameters())), next(iter(ae.parameters())))


def test_export_round_trip(tmp_path):
    _ae, path = _fake_checkpoint(tmp_path)
    out = export_model(path, tmp_path / "model.safetensors")
    a, b = load_autoencoder(path), load_autoencoder(out)
    assert b.used_ema and b.step == 7
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a.model(x, sample_posterior=False)[0], b.model(x, sample_posterior=False)[0])


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format": CHECKPOINT_FORMAT, "x": _Evil()}, f)
    with pytest.raises(UserError, match="cannot load checkpoint"):
        load_checkpoint(bad)


def test_missing_and_foreign_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_autoencoder(tmp_path / "nope.pt")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserError, match="has no checkpoint"):
        load_autoencoder(tmp_path / "empty_run")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a litevae checkpoint"):
        load_autoencoder(tmp_path / "other.pt")


def test_atomic_save_leaves_no_temp_files(tmp_path):
    save_atomic({"a": torch.ones(2)}, tmp_path / "x.pt")
    save_atomic({"a": torch.zeros(2)}, tmp_path / "x.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["a"], torch.zeros(2))


def test_export_command(tmp_path):
    from typer.testing import CliRunner

    from litevae_cli.cli import app

    _fake_checkpoint(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    assert "EMA weights" in result.output and load_autoencoder(tmp_path / "m.safetensors").step == 7
    bad = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "m.bin")])
    assert bad.exit_code == 2 and "must end in .safetensors" in bad.output and "Traceback" not in bad.output


def test_previous_block_layout_is_refused_with_one_line(tmp_path):
    """Version-1 files (open-LiteVAE's SMC block layout) would load their same-named SMC weights into the
    App. G blocks and silently compute something else: checkpoints and exports are refused by version."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    ae, path = _fake_checkpoint(tmp_path)
    old = tmp_path / "old.pt"
    save_atomic({**torch.load(path, weights_only=True), "version": 1}, old)
    with pytest.raises(UserError, match="format version 1 .* reads version 2"):
        load_autoencoder(old)
    export = export_model(path, tmp_path / "new.safetensors")
    old_export = tmp_path / "old.safetensors"
    from safetensors import safe_open
    with safe_open(str(export), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "version"}  # v1 exports had no version
    save_file({k: v.contiguous() for k, v in ae.state_dict().items()}, str(old_export), metadata=meta)
    with pytest.raises(UserError, match="format version None"):
        load_autoencoder(old_export)
    for bad in (old, old_export):
        run = subprocess.run([sys.executable, "-m", "litevae_cli", "export", str(bad), str(tmp_path / "x.safetensors")],
                             capture_output=True, text=True)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr + run.stdout and "format version" in run.stderr + run.stdout
