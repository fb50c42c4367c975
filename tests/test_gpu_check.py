"""scripts/gpu_check.sh and benchmarks/speed/gpu_bench.py on a CPU (issues 16, 22, 26): the offline dry run.

One `--dry-run` of the whole check runs with pywavelets, lpips, tensorboard, webdataset, clean-fid, diffusers
(and scipy, scikit-image, safetensors, psutil, huggingface_hub, typer) unimportable (`offline_env`): it must
finish, say what each missing package skips, write every output file (the bench's JSON and Markdown after
each arm, the check's per-part summary), collect and skip the GPU tests, and measure every dry arm with the
LPIPS stand-in and the registry's SD-VAE peer. The bench keeps what it measured when SIGINT arrives, and
its arms' caps and budget hold.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from litevae_cli.models import list_models
from offline_env import OPTIONAL, blocking_dir, probe_wheel_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
BENCH = ROOT / "benchmarks" / "speed"
BLOCKED = ("pywt", "lpips", "tensorboard", "webdataset", "cleanfid", "diffusers")


def _env(tmp_path, **extra):
    block = blocking_dir(tmp_path / "blocked")
    return {**os.environ, "PY": sys.executable, "PYTHONPATH": f"{block}{os.pathsep}{ROOT}", **extra}


def _run(tmp_path, *args, timeout=300):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(tmp_path), cwd=ROOT)


def _children_cpu() -> float:
    """CPU seconds of every finished child process (load-independent, unlike wall time on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    out = tmp / "gpu"
    t0, cpu0 = time.perf_counter(), _children_cpu()
    # A wheels folder as `make gpu-wheels` leaves it; PIP_TARGET keeps the install out of this environment.
    wheels = probe_wheel_dir(tmp / "wheels")
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], capture_output=True, text=True, timeout=300,
                         env=_env(tmp, GPU_CHECK_WHEELS=str(wheels), PIP_TARGET=str(tmp / "site")), cwd=ROOT)
    assert (tmp / "site" / "litevae_probe" / "__init__.py").is_file(), (run.stdout + run.stderr)[-3000:]
    return run, out, {"wall": time.perf_counter() - t0, "cpu": _children_cpu() - cpu0}


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_offline_dry_run_says_what_each_missing_package_skips(offline):
    run, out, _ = offline
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    for name in BLOCKED:
        assert f"skip: {name} missing" in run.stdout, name
    assert "skip: lpips package missing" in run.stdout  # the bench's own line: the stand-in replaces it
    deps = (out / "dependencies.txt").read_text()
    assert "have torch" in deps and "have yaml" in deps and "REQUIRED MISSING" not in deps
    assert {"environment.txt", "dependencies.txt", "gpu_bench.json", "gpu_bench.md", "gpu_bench.log",
            "gpu_tests.log", "gpu_tests.xml", "gpu_check.json", "gpu_check.md", "ddp_step.json",
            "wheels_install.log"} <= \
        {p.name for p in out.iterdir()}
    parts = json.loads((out / "gpu_check.json").read_text())["parts"]
    assert [p["part"] for p in parts] == ["wheels", "environment", "dependencies", "bench", "tests"]
    assert parts[0]["status"] == "ok"  # the carried wheels installed offline
    assert parts[3]["status"] == parts[4]["status"] == "rc 0"
    assert "bench rc=0, tests rc=0" in run.stdout


def test_offline_dry_run_collects_and_skips_the_gpu_tests(offline):
    _, out, _ = offline
    suite = ET.parse(out / "gpu_tests.xml").getroot().find("testsuite")
    names = [case.get("name") for case in suite.iter("testcase")]
    assert len(names) == len(list_models()) + 4 and int(suite.get("errors")) == int(suite.get("failures")) == 0
    assert {f"test_forward_backward_on_cuda[{m}]" for m in list_models()} <= set(names)
    if not torch.cuda.is_available():
        assert int(suite.get("skipped")) == len(names)


def test_offline_dry_run_measures_every_arm(offline):
    _, out, seconds = offline
    doc = json.loads((out / "gpu_bench.json").read_text())
    assert doc["dry_run"] is True and doc["stopped"] is None and doc["errors"] == []
    arms = doc["arms"]
    by = {}
    for a in arms:
        by.setdefault(a["section"], []).append(a)
    bad = [(a["name"], a["status"], a.get("why")) for a in arms if a["status"] not in ("ok", "skipped", "not run")]
    assert not bad, bad
    train = [a for a in by["train-B"] if a["status"] == "ok"]
    # base at batches 2 and 1; at 2: channels_last off, cudnn.benchmark, LPIPS bf16, precision auto; tuned x 2
    assert {(a["batch"], a["channels_last"], a["cudnn_benchmark"], a["lpips_bf16"], a["precision"] if
             a["precision"] == "fp32" else "auto") for a in train} >= {
        (2, True, False, False, "fp32"), (1, True, False, False, "fp32"), (2, False, False, False, "fp32"),
        (2, True, True, False, "fp32"), (2, True, False, True, "fp32"), (2, True, False, False, "auto")}
    assert all(a["lpips_standin"] and "STAND-IN" in a["lpips"] and a["nonfinite_steps"] == 0
               and a["img_s"]["median"] > 0 for a in train)
    auto = next(a for a in train if a["precision_reason"].startswith("auto"))
    assert auto["precision"] in ("bf16", "fp32")
    phase_a = [a for a in by["train-A"] if a["status"] == "ok"]
    assert [a["compiled"] for a in phase_a] == ["", "model"] and phase_a[1]["compile_backend"] == "eager"
    assert [a["status"] for a in by["train-B"] if a["compiled"]] == ["not run", "not run"]  # dry: phase A only
    ddp = by["ddp"][0]
    assert ddp["status"] == "ok" and ddp["backend"] == "gloo" and ddp["all_reduce_ok"]
    assert ddp["wrapped"] == ["DistributedDataParallel", "DistributedDataParallel"]
    assert by["loader"][0]["status"] in ("ok", "skipped")
    enc = [a for a in by["encoders"] if a["status"] == "ok"]
    assert len(enc) == 16 and {a["model"] for a in enc} == {"litevae-tiny", "sd-vae-encoder-tiny"}
    assert set(doc["encoder_best"]) == {"2", "1"} and all("ratio" in b for b in doc["encoder_best"].values())
    table = (out / "gpu_bench.md").read_text()
    assert table.startswith("**DRY RUN") and "STAND-IN" in table and "1-rank DDP step (gloo" in table
    assert "each at its best" in table and "Skipped parts:" in table or by["loader"][0]["status"] == "ok"
    # The whole dry check (bench, GPU-test collection, dependency report): about 35 CPU seconds, i.e. about
    # 35-40 s on an idle machine (the bench runs one thread); wall time on a shared machine says little.
    assert seconds["cpu"] < 60, seconds


def test_a_missing_required_package_stops_the_check_with_one_line(tmp_path):
    block = blocking_dir(tmp_path / "blocked", OPTIONAL + ("rich",))  # the optional ones: a quick report
    env = {**os.environ, "PY": sys.executable, "PYTHONPATH": f"{block}{os.pathsep}{ROOT}"}
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path / "gpu")], capture_output=True, text=True,
                         timeout=120, env=env, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "error: rich not importable" in run.stderr and "make gpu-wheels" in run.stderr
    assert "MISSING rich (required" in (tmp_path / "gpu" / "dependencies.txt").read_text()
    assert not (tmp_path / "gpu" / "gpu_bench.json").exists()


def test_bench_keeps_what_it_measured_when_interrupted(tmp_path):
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-W", "ignore", str(BENCH / "gpu_bench.py"), "--dry-run", "--out",
                             str(out)], env=_env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the first measured arm on disk, then interrupt as `timeout -s INT` does
        path = out / "gpu_bench.json"
        if path.is_file() and json.loads(path.read_text())["arms"]:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, log[-2000:]
    doc = json.loads((out / "gpu_bench.json").read_text())
    assert doc["stopped"].startswith("SIGINT") and doc["arms"][0]["status"] == "ok"
    assert doc["arms"][-1]["status"] in ("ok", "stopped")
    assert "Stopped early (SIGINT" in (out / "gpu_bench.md").read_text()


def test_lpips_standin_has_the_shape_of_lpips():
    lpips = pytest.importorskip("lpips")
    sys.path.insert(0, str(BENCH))
    try:
        from lpips_standin import StandinLPIPS
    finally:
        sys.path.pop(0)
    real = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    stand = StandinLPIPS("alex")
    shapes = lambda m: sorted(tuple(p.shape) for p in m.parameters())  # noqa: E731
    assert shapes(stand) == shapes(real) and not any(p.requires_grad for p in stand.parameters())
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert stand(x, y).shape == real(x, y).shape == (2, 1, 1, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_the_real_run_stops_with_one_line(tmp_path):
    run = _run(tmp_path, str(tmp_path / "gpu"), timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--dry-run" in run.stderr
    assert not (tmp_path / "gpu").exists() or not any((tmp_path / "gpu").iterdir())
