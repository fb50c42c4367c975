"""The KL sweep (benchmarks/tuning/kl_sweep.py): its weights are what its docstring says, its choice rule
does what RULE says on made-up rows, and `--quick` runs end to end (real training, held-out measures)."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "tuning" / "kl_sweep.py"
sys.path.insert(0, str(ROOT / "benchmarks" / "tuning"))

import kl_sweep  # noqa: E402


def test_weights_span_ldms_equivalent_to_the_current_default():
    assert math.isclose(kl_sweep.LDM, 6.25e-8)  # LDM's 1e-6 summed per image = 1e-6 * 12 / 192 per element
    assert kl_sweep.WEIGHTS[0] == kl_sweep.LDM and kl_sweep.WEIGHTS[-1] == kl_sweep.CURRENT == 1e-3
    assert len(kl_sweep.WEIGHTS) >= 4 and list(kl_sweep.WEIGHTS) == sorted(kl_sweep.WEIGHTS)
    cmd = kl_sweep.train_cmd(1e-3, Path("o"), 2000, 250, None)
    assert "model.encoder_kwargs.logvar_init=0.0" in cmd and "data.resolution=64" in cmd and "2000" in cmd


def row(kl, psnr, hf=0.3):
    return {"kl_nats_per_element": kl, "per_image": {"a": psnr, "b": psnr}, "hf_energy": hf}


def test_choice_rule():
    w = kl_sweep.WEIGHTS
    # The term never acts: no choice, the default stays (flagged).
    assert kl_sweep.choose({x: row(0.30, 20.0) for x in w})[0] is None
    # It acts from 4e-5 on; 1e-3 costs 1 dB, 4e-5 costs 0.1 dB: 4e-5.
    rows = {w[0]: row(0.30, 20.0), w[1]: row(0.29, 20.0), w[2]: row(0.20, 19.9), w[3]: row(0.05, 19.0)}
    assert kl_sweep.choose(rows)[0] == w[2]
    # Within 0.2 dB everywhere: the largest acting weight, unless it raises the HF share by more than 0.05.
    rows[w[3]] = row(0.05, 19.95)
    assert kl_sweep.choose(rows)[0] == w[3]
    rows[w[3]] = row(0.05, 19.95, hf=0.5)
    assert kl_sweep.choose(rows)[0] == w[2]


def test_quick_sweep_runs_and_writes_the_table(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    res = json.loads((tmp_path / "kl_sweep.json").read_text())
    assert len(res["final"]) == 2 and not {"chelsea", "coffee"} & set(res["photos"])
    for r in res["final"].values():
        assert 5 < r["psnr"] < 60 and r["kl_nats_per_element"] > 0 and 0 < r["posterior_std"]
        assert 0 <= r["hf_energy"] <= 1 and math.isfinite(r["mmd2_normalised"])
    assert all(len(c) >= 2 for c in res["curves"].values())  # a point per checkpoint
    md = (tmp_path / "kl_sweep.md").read_text()
    assert "| loss.kl (per element) |" in md and "Rule:" in md and "Choice:" in md


def test_each_job_gets_a_core_no_running_job_holds(tmp_path, monkeypatch):
    """A finished job's core goes to the next job (it once went to core len(running), which put two
    jobs on one core and left the other idle)."""
    running: list = []
    overlaps: list = []

    class FakeProc:
        def __init__(self, cmd, **kwargs):
            self.core = cmd[2] if cmd[0] == "taskset" else None
            self.polls, self.returncode = 0, None
            self.life = 1 if not running else 4  # the first job ends first
            overlaps.extend(p.core for p in running if p.returncode is None and p.core == self.core)
            running.append(self)

        def poll(self):
            self.polls += 1
            if self.polls >= self.life:
                self.returncode = 0
            return self.returncode

        def terminate(self):
            self.returncode = -15

    monkeypatch.setattr(kl_sweep.subprocess, "Popen", FakeProc)
    monkeypatch.setattr(kl_sweep.shutil, "which", lambda name: "/usr/bin/taskset")
    monkeypatch.setattr(kl_sweep.os, "cpu_count", lambda: 2)
    monkeypatch.setattr("time.sleep", lambda s: None)
    kl_sweep.train_all(kl_sweep.WEIGHTS, tmp_path, 10, 5, 2, None)
    assert len(running) == len(kl_sweep.WEIGHTS) and overlaps == []
    assert {p.core for p in running} == {"0", "1"}
