"""The parts of benchmarks/speed/gpu_bench.py that its CPU dry run does not reach (issues 22, 26).

- `run_arm`: an arm past its cap is a timeout row, an arm after the budget is spent is not run, a failure or
  an out-of-memory is a row and the next arm still runs; every row is on disk (JSON and Markdown) at once.
- `compile_state`: "model" compiles the autoencoder alone; "all" also the discriminator (both its uses) and LPIPS.
- the diffusers SD-VAE peer (the GPU run's; the dry run uses the registry's tiny one): it builds, its encoder
  computes the same moments shape as the registry's sd-vae-encoder, and it is timed like the others.
"""

import json
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "speed"
sys.path.insert(0, str(BENCH))
import gpu_encoders  # noqa: E402
import gpu_record  # noqa: E402
from gpu_report import markdown  # noqa: E402
from gpu_train_arms import compile_state  # noqa: E402

sys.path.remove(str(BENCH))


def _doc():
    return {"dry_run": True, "date": "today", "budget_s": 10.0, "stopped": None,
            "machine": {"device": "cpu", "torch": torch.__version__, "cuda": None}}


@pytest.fixture
def alarm():
    """The bench's SIGALRM handler (the arm cap) for one test; pytest's own handlers stay."""
    before = signal.signal(signal.SIGALRM, gpu_record._raise_timeout)
    yield
    signal.signal(signal.SIGALRM, before)


def test_arms_are_recorded_at_once_and_capped(tmp_path, alarm):
    rec = gpu_record.Recorder(tmp_path, _doc(), markdown)
    budget = gpu_record.Budget(30)
    ok = gpu_record.run_arm(rec, budget, "encoders", "fast", 5, lambda: {"img_s": {"median": 2.0, "min": 1.0,
                                                                                      "max": 3.0, "n": 3}})
    assert ok["status"] == "ok" and json.loads((tmp_path / "gpu_bench.json").read_text())["arms"][0]["name"] == "fast"
    t = time.perf_counter()
    slow = gpu_record.run_arm(rec, budget, "encoders", "slow", 0.6, lambda: time.sleep(5) or {})
    assert slow["status"] == "timeout" and time.perf_counter() - t < 3
    bad = gpu_record.run_arm(rec, budget, "encoders", "bad", 5, lambda: 1 / 0)
    assert bad["status"] == "error" and bad["why"].startswith("ZeroDivisionError")

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert gpu_record.run_arm(rec, budget, "encoders", "big", 5, oom)["status"] == "oom"
    spent = gpu_record.Budget(0)
    late = gpu_record.run_arm(rec, spent, "encoders", "late", 5, lambda: pytest.fail("must not run"))
    assert late["status"] == "not run" and "budget spent" in late["why"]
    doc = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert [a["status"] for a in doc["arms"]] == ["ok", "timeout", "error", "oom", "not run"]
    table = (tmp_path / "gpu_bench.md").read_text()
    assert "| fast |" in table and "**timeout**: stopped at its" in table and "Not measured: 2 arm(s)" in table


def test_compile_state_compiles_what_the_arm_names(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda m, backend=None: ("compiled", m, backend))

    def state():
        model, disc = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
        return SimpleNamespace(model=model, model_ddp=model, disc=disc, disc_ddp=disc), \
            SimpleNamespace(lpips=torch.nn.Identity())

    s, loss = state()
    compile_state(s, loss, "inductor", "model")
    assert s.model_ddp[0] == "compiled" and s.model_ddp[2] == "inductor"
    assert isinstance(s.disc, torch.nn.Linear) and isinstance(loss.lpips, torch.nn.Identity)
    s, loss = state()
    compile_state(s, loss, "inductor", "all")
    assert s.disc[0] == "compiled" and s.disc_ddp is s.disc and loss.lpips[0] == "compiled"


def test_the_diffusers_peer_is_sd_vae_encoder_shaped(monkeypatch):
    pytest.importorskip("diffusers")
    import harness

    # The SD 1.x layout at a quarter of its widths (building the real 84 M-parameter VAE takes seconds here).
    monkeypatch.setitem(harness.SD1_CONFIG, "block_out_channels", (32, 64, 128, 128))
    monkeypatch.setattr(gpu_encoders, "_BUILT", {})
    label, source = gpu_encoders.peer("sd-vae-encoder", True)
    assert label.startswith("sd-vae (diffusers") and "diffusers AutoencoderKL" in source
    row = gpu_encoders.encoder_arm(label, "cpu", 1, 32, "fp32", False, False, "eager", 0, 1, 0.0)
    assert row["img_s"]["median"] > 0 and row["layout"] == "NCHW" and row["compiled"] is False
    from litevae_cli.models import create_model

    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ours = create_model("sd-vae-encoder-tiny", nz=4)(x)
        theirs = gpu_encoders.build(label)(x)
    assert tuple(theirs.shape) == tuple(getattr(ours, "moments", ours).shape) == (1, 8, 4, 4)
    best = gpu_encoders.best_of([dict(row, model="litevae-b", img_s={"median": 6.0}), dict(row, img_s={"median": 2.0})])
    assert best["1"]["ratio"] == pytest.approx(3.0)
