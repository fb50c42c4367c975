"""Issue 16 item 4c: scripts/gpu_check.sh parses and its CPU-runnable parts run here (`--dry-run`): the
GPU tests are collected (one per registered model, plus the train, resume and encode tests) and skipped
without CUDA, and benchmarks/speed/gpu_bench.py writes its JSON and Markdown table from tiny models."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from litevae_cli.models import list_models

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args, timeout=300):
    env = {**os.environ, "PY": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_collects_the_gpu_tests_and_writes_the_bench_outputs(tmp_path):
    out = tmp_path / "gpu"
    run = _run("--dry-run", str(out))
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["environment.txt", "gpu_bench.json", "gpu_bench.md",
                                                     "gpu_tests.log", "gpu_tests.xml"]
    suite = ET.parse(out / "gpu_tests.xml").getroot().find("testsuite")
    names = [case.get("name") for case in suite.iter("testcase")]
    assert len(names) == len(list_models()) + 4 and int(suite.get("errors")) == int(suite.get("failures")) == 0
    assert {f"test_forward_backward_on_cuda[{m}]" for m in list_models()} <= set(names)
    if not torch.cuda.is_available():
        assert int(suite.get("skipped")) == len(names)
    doc = json.loads((out / "gpu_bench.json").read_text())
    assert doc["dry_run"] is True and [r["model"] for r in doc["encoders"]["rows"]] == ["litevae-tiny",
                                                                                        "sd-vae-encoder-tiny"]
    assert [t["preset"] for t in doc["train"]] == ["b-pretrain", "b-finetune"]
    assert all(t["img_s"]["median"] > 0 and t["nonfinite_steps"] == 0 and t["steps_run"] >= 2 for t in doc["train"])
    assert doc["train"][1]["model"].endswith("disc unet-disc-tiny") and doc["train"][0]["random_lpips_backbone"]
    table = (out / "gpu_bench.md").read_text()
    assert table.startswith("**DRY RUN") and "| litevae-tiny | 0.1" in table and "| b-finetune: " in table
    assert "tests rc=0, bench rc=0" in run.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_the_real_run_stops_with_one_line(tmp_path):
    run = _run(str(tmp_path / "gpu"), timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--dry-run" in run.stderr
    assert not (tmp_path / "gpu").exists() or not any((tmp_path / "gpu").iterdir())
