"""`runtime.compile` / `--compile` (runtime.compiled_models): the models compile where they sit,
so checkpoints keep their keys (no `_orig_mod.`), a compiled run resumes an eager one and back with the
same weights as an uninterrupted eager run, the warm-up is reported apart, and eval / encode-dataset give
eager's results. Dynamo's "eager" backend (tracing without codegen) is bit-exact with eager, so the
comparisons are exact; inductor's speed is measured in benchmarks (CPU inductor builds take minutes)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from litevae_cli.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()
# A discriminator from step 1, so the compiled discriminator trains too.
WITH_D = {"discriminator": {"name": "patchgan-tiny", "start_step": 1}}


@pytest.fixture(autouse=True)
def _eager_backend(monkeypatch):
    monkeypatch.setenv("LITEVAE_COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


def _train(preset, data, out, steps, *extra):
    res = runner.invoke(app, ["pretrain", "--preset", preset, "--data", str(data), "--out", str(out),
                              "--steps", str(steps), "--device", "cpu", *extra])
    assert res.exit_code == 0, res.output
    return res.output


def _weights(out):
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return ckpt


def _same(a, b):
    for part in ("model", "discriminator", "ema"):
        if a[part] is None:
            assert b[part] is None
            continue
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_compiled_runs_resume_eager_ones_and_back_with_eager_weights(tiny_preset, make_images, tmp_path):
    preset, data = tiny_preset(**WITH_D), make_images(n=4)
    _train(preset, data, tmp_path / "eager", 4)
    assert not torch._dynamo.utils.counters["stats"]["unique_graphs"]  # eager: nothing traced
    out = _train(preset, data, tmp_path / "compiled", 2, "--compile")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 3  # encoder, decoder, discriminator
    assert "compile:" in out and "warm-up" in out, out
    record = _weights(tmp_path / "compiled")
    assert not [k for part in ("model", "discriminator") for k in record[part] if "_orig_mod" in k]
    assert record["run"]["compile"]["backend"] == "eager"
    assert record["run"]["compile"]["group_norm"]["kernels"] == "aten"  # CPU: ATen's GroupNorm inside the graph
    assert record["run"]["compile"]["group_norm"]["routed"] > 0  # and still eager's weights (below)
    _train(preset, data, tmp_path / "compiled", 4, "--no-compile")  # compiled -> eager
    _train(preset, data, tmp_path / "mixed", 2)
    _train(preset, data, tmp_path / "mixed", 4, "--compile")  # eager -> compiled
    reference = _weights(tmp_path / "eager")
    _same(reference, _weights(tmp_path / "compiled"))
    _same(reference, _weights(tmp_path / "mixed"))


def test_eval_and_encode_compiled_equal_eager(tiny_ckpt, make_images, tmp_path):
    data = make_images(n=3)
    reports = []
    for flag in ("--no-compile", "--compile"):
        res = runner.invoke(app, ["eval", tiny_ckpt, "--data", str(data), "--resolution", "32", "--device", "cpu",
                                  "--json", str(tmp_path / f"{flag}.json"), flag])
        assert res.exit_code == 0, res.output
        reports.append(json.loads((tmp_path / f"{flag}.json").read_text()))
    assert reports[0]["results"] == reports[1]["results"]
    stats = []
    for flag in ("--no-compile", "--compile"):
        res = runner.invoke(app, ["encode-dataset", tiny_ckpt, "--data", str(data), "--out", str(tmp_path / flag),
                                  "--resolution", "32", "--workers", "0", "--device", "cpu", flag])
        assert res.exit_code == 0, res.output
        stats.append(json.loads((tmp_path / flag / "stats.json").read_text()))
    assert stats[0]["channel_mean"] == stats[1]["channel_mean"] and stats[0]["channel_std"] == stats[1]["channel_std"]


def test_an_unknown_backend_is_one_line(tiny_preset, make_images, tmp_path, monkeypatch):
    monkeypatch.setenv("LITEVAE_COMPILE_BACKEND", "no-such-backend")
    res = runner.invoke(app, ["pretrain", "--preset", tiny_preset(), "--data", str(make_images()), "--out",
                              str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--compile"])
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith("error: compile backend"), res.output
