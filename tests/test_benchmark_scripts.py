"""The tuning and sweep scripts behind BENCHMARKS.md stay runnable: shell syntax, tables from results."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kl_sweep_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "tuning" / "kl_sweep.sh")]).returncode == 0


def test_curves_table_renders_arms_and_curves(tmp_path):
    result = {"final": {"arm": "kl1e-3", "sets": ["loss.kl=1e-3"], "ft_sets": [], "train_minutes": 5.14,
                        "psnr": 17.42, "ssim": 0.463, "kl_nats_per_element": 0.293, "posterior_std": 0.758,
                        "mmd2_sum": 0.187},
              "rows": [{"phase": "pretrain", "step": 150, "minutes": 2.5, "psnr": 16.0, "ssim": 0.4}]}
    (tmp_path / "kl1e-3.json").write_text(json.dumps(result))
    script = str(ROOT / "benchmarks" / "tuning" / "curves_table.py")
    arms = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert "| kl1e-3 | loss.kl=1e-3 | 5.14 | 17.42 | 0.463 | 0.293 | 0.758 | 0.187 | - |" in arms.stdout
    curve = subprocess.run([sys.executable, script, str(tmp_path), "--curve"], capture_output=True, text=True,
                           check=True)
    assert "| kl1e-3 | pretrain | 150 | 2.50 | 16.00 | 0.400 |" in curve.stdout
    empty = subprocess.run([sys.executable, script, str(tmp_path / "none")], capture_output=True, text=True)
    assert empty.returncode != 0 and "no curves.py results" in empty.stderr


def test_quick_arms_runs_a_step_with_overrides():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tuning" / "quick_arms.py"), "--steps", "2", "--batch", "2",
                          "--kl", "1e-5", "--logvar-init", "0"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "'kl': 1e-05" in run.stdout and "'logvar_init': 0.0" in run.stdout


def test_precision_bench_times_fp32_against_bf16_and_names_autos_choice(tmp_path):
    out = tmp_path / "precision.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed" / "precision_bench.py"), "--batch", "1",
                          "--reps", "1", "--warmup", "0", "--threads", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [r["setting"] for r in doc["rows"]] == ["fp32 NCHW", "bf16 channels_last", "bf16 NCHW"]
    assert doc["rows"][0]["ratio_vs_fp32"]["median"] == 1.0 and all(r["img_s"]["median"] > 0 for r in doc["rows"])
    assert doc["auto"]["precision"] in ("fp32", "bf16") and doc["auto"]["reason"].startswith("auto:")
    assert {"cpu", "cpu_flags", "threads", "torch"} <= set(doc["machine"])
