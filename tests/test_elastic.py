"""Real torchrun runs (gloo on CPU, 2 ranks, tiny model at 32 px): a multi-node launch, an elastic restart
after a killed rank, and SIGTERM to the launcher.

- Two launchers on 127.0.0.1 (`--nnodes 2 --rdzv-backend c10d`, one rank each) train the reference run.
- `--max-restarts 1` with rank 1 killed at step 3 on the first attempt (LITEVAE_TEST_KILL_AT_STEP): rank 0
  says so in one line, the agent restarts the group, the rerun resumes from last.pt (step 2) and ends with
  the reference's weights. It sets `train.batch_per_gpu: 2` where the reference sets the global
  `batch_size: 4`: the same batches on 2 ranks, so equal weights show the batch semantics too.
- SIGTERM to the launcher: rank 0 writes last.pt and every process is gone well within torchrun's grace.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import image_folder, write_preset

# TINY_PRESET at 4 steps of 4 images, a checkpoint every 2 steps.
ELASTIC = {"name": "tiny-elastic", "train": {"steps": 4, "batch_size": 4},
           "log": {"sample_every": 1000, "checkpoint_every": 2}}
RUN = [sys.executable, "-m", "torch.distributed.run"]


def _setup(tmp_path):
    return write_preset(tmp_path / "tiny.yaml", ELASTIC), str(image_folder(tmp_path / "images", n=8))


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITEVAE_TEST_", "TORCHELASTIC_"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _train(preset, data, out, *extra):
    return ["-m", "litevae_cli", "pretrain", "--preset", preset, "--data", data, "--out", str(out), "--device", "cpu",
            *extra]


def _launch(cmd, **env) -> subprocess.Popen:
    """torchrun in its own session, so `_finish` can end its workers too if it hangs."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(**env),
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(out):
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)


@pytest.mark.slow
def test_two_node_launch_and_an_elastic_restart_end_equal(tmp_path):
    preset, data = _setup(tmp_path)
    # Reference: two launchers ("nodes") meeting at one c10d rendezvous on 127.0.0.1, one rank each.
    ref = tmp_path / "ref"
    node = [*RUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "litevae-test"]
    nodes = [_launch(node + _train(preset, data, ref)) for _ in range(2)]
    logs = [_finish(p) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(logs)[-4000:]
    assert sum("batch 4 global = 2 per rank x 1 accum x 2 ranks (train.batch_size)" in log for log in logs) == 1

    # Elastic: rank 1 dies after step 3 on the first attempt; the agent restarts both ranks.
    out = tmp_path / "elastic"
    proc = _launch([*RUN, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                    *_train(preset, data, out, "--set", "train.batch_per_gpu=2")], LITEVAE_TEST_KILL_AT_STEP="3")
    text = _finish(proc)
    assert proc.returncode == 0, text[-4000:]
    assert "rank 0: peer rank 1 is gone; last checkpoint step 2;" in text
    assert "Traceback" not in text
    assert "resuming" in text and "at step 2 of 4" in text

    got, want = _model(out), _model(ref)
    assert got["step"] == want["step"] == 4
    assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
    assert got["run"]["batch"] == {"global": 4, "per_gpu": 2, "grad_accum": 1, "world_size": 2,
                                   "set_by": "train.batch_per_gpu"}
    assert want["run"]["batch"]["set_by"] == "train.batch_size"
    assert got["run"]["distributed"] == {"world_size": 2, "backend": "gloo", "dist_timeout_s": 600.0}


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_on_rank0_within_the_grace(tmp_path):
    preset, data = _setup(tmp_path)
    out = tmp_path / "run"
    proc = _launch([*RUN, "--standalone", "--nproc-per-node", "2", *_train(preset, data, out, "--steps", "100000")])
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("no training step within 120 s")
        time.sleep(0.2)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # to the agent, which forwards it to both ranks (as a scheduler would)
    text = _finish(proc, timeout=60)
    took = time.monotonic() - sent
    assert took < 25, f"{took:.1f} s: torchrun's 30 s grace nearly ran out\n{text[-3000:]}"
    assert "SIGTERM received: stopped after step" in text and "SIGKILL" not in text, text[-3000:]
    ckpt = _model(out)
    assert ckpt["step"] >= 2
    assert f"stopped after step {ckpt['step']}, wrote" in text
