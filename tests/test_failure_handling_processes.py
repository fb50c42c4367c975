"""Issue 12 with real processes: a SIGTERM to the whole process group while data-loader workers run
(finding 1), a worker killed under a run (finding 1), two runs on one --out (finding 2), and the run
record with its different-data warning. A run is frozen with SIGSTOP while the second one (the CLI,
in this process, to save an interpreter start) tries its folder, so the order of events is fixed."""

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
from litevae_cli.jobs import stopping
from litevae_cli.cli import app

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
PIPE = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def _args(*args) -> list[str]:
    return [*map(str, args), "--device", "cpu"]


LITEVAE = [sys.executable, "-m", "litevae_cli"]


def _wait(proc, ready, timeout=120):
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def _lines(path):
    return path.read_text().splitlines() if path.is_file() else []


def _refused_by(args, holder: int) -> None:
    """Run the CLI with `args` while process `holder` holds the folder: one line naming it, exit 2."""
    other = CliRunner().invoke(app, args)
    assert other.exit_code == 2 and "Traceback" not in other.output, other.output
    assert other.stderr.strip().splitlines() == [other.stderr.strip()]
    assert f"in use by another litevae process (PID {holder})" in other.stderr


@pytest.mark.slow
def test_training_group_sigterm_dead_worker_second_run_and_run_record(tmp_path, tiny_preset, make_images,
                                                                     monkeypatch, capsys):
    data, out, preset = make_images(n=3), tmp_path / "run", tiny_preset(data={"workers": 1})
    train = _args("pretrain", "--preset", preset, "--out", out)
    metrics = out / "metrics.jsonl"
    first = subprocess.Popen([*LITEVAE, *train, "--data", data], start_new_session=True, **PIPE)  # as setsid
    _wait(first, lambda: _lines(metrics))
    os.killpg(first.pid, signal.SIGSTOP)
    _refused_by([*train, "--data", str(data)], first.pid)  # finding 2
    os.killpg(first.pid, signal.SIGTERM)  # finding 1: main process and loader worker alike
    os.killpg(first.pid, signal.SIGCONT)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM received: stopped after step" in output and "Traceback" not in output
    assert "DataLoader" not in output and "data loader" not in output
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    step = ckpt["step"]
    assert step >= 1 and json.loads(_lines(metrics)[-1])["step"] == step
    run = ckpt["run"]  # what produced the run, in the checkpoint and in config.yaml
    assert run["data"] == str(data) and "pretrain" in run["command"] and run["torch"] == str(torch.__version__)
    assert yaml.safe_load((out / "config.yaml").read_text())["run"] == run

    # Resume on other data (one warning line); a loader worker killed under the run (a real fork of this
    # process, SIGKILLed after a step) is a stop too: last.pt from the last completed step, exit 128+9.
    workers = []
    watch, step_once = stopping.StopSignal.watch, litevae_cli.training.loop.train_step

    def watching(self, iterator):
        workers.extend(w.pid for w in iterator._workers)
        return watch(self, iterator)

    def kill_after_a_step(*args, **kwargs):
        result = step_once(*args, **kwargs)
        if result.images and workers:
            os.kill(workers[0], signal.SIGKILL)
            os.waitid(os.P_PID, workers.pop(), os.WEXITED | os.WNOWAIT)  # dead; SIGCHLD on its way
        return result

    monkeypatch.setattr(stopping.StopSignal, "watch", watching)
    monkeypatch.setattr(litevae_cli.training.loop, "train_step", kill_after_a_step)
    other = make_images("other", n=3)
    capsys.readouterr()
    assert litevae_cli.training.loop.train("pretrain", preset, str(other), out, device="cpu") == 128 + signal.SIGKILL
    output = capsys.readouterr().out
    assert [line for line in output.splitlines() if "warning" in line] == [
        f"warning: resuming on different data: {out / 'checkpoints' / 'last.pt'} was trained on {data}, "
        f"this run reads {other}"]
    assert "was killed by SIGKILL: stopped after step" in output
    resumed = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["step"] > step and resumed["run"]["data"] == str(other)
    assert json.loads(_lines(metrics)[-1])["step"] == resumed["step"]  # the last completed step


@pytest.mark.slow
def test_encode_group_sigterm_commits_its_shard_second_run_refused_rerun_completes(tmp_path, tiny_ckpt):
    data, out = tmp_path / "images", tmp_path / "lat"
    data.mkdir()
    rng = np.random.default_rng(3)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(data / f"{i:03d}.png")
    encode = _args("encode-dataset", tiny_ckpt, "--data", data, "--out", out, "--resolution", 16,
                   "--batch-size", 1, "--shard-size", 2, "--workers", 1)
    journal = out / "progress-r0.jsonl"
    first = subprocess.Popen([*LITEVAE, *encode], start_new_session=True, **PIPE)
    _wait(first, lambda: len(_lines(journal)) >= 2)  # the header and a committed shard
    os.killpg(first.pid, signal.SIGSTOP)
    _refused_by(encode, first.pid)  # finding 2, for encode-dataset
    os.killpg(first.pid, signal.SIGTERM)  # finding 1, for encode-dataset
    os.killpg(first.pid, signal.SIGCONT)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, output
    stop_line, = [line for line in output.splitlines() if "SIGTERM" in line]
    assert stop_line.startswith("SIGTERM received: stopped after") and "rerun the same command" in stop_line
    assert "Traceback" not in output and not (out / "stats.json").exists()

    done = CliRunner().invoke(app, [*encode, "--workers", "0"])  # the rerun (the last --workers wins)
    assert done.exit_code == 0, done.output
    assert "discarded partial shard" not in done.output  # the open shard was committed on the stop
    assert json.loads((out / "stats.json").read_text())["count"] == 40
    import webdataset as wds

    keys = [s["__key__"] for s in wds.WebDataset(sorted(map(str, out.glob("latents-*.tar"))), shardshuffle=False)]
    assert keys == [f"{i:03d}" for i in range(40)]
