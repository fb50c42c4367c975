"""`make reproduce-check`: REPRODUCTION.md's fingerprint against what this checkout's `make reproduce` would run.
A changed arm config fails and is named; the model code counts; only an explicit stale marker passes a
mismatch (with a warning); the committed REPRODUCTION.md passes."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "reproduce"))

import recipe  # noqa: E402
from reproduce_check import STALE_MESSAGE, check  # noqa: E402
from reproduce_report import fingerprint_section  # noqa: E402


@pytest.fixture(scope="module")
def current():
    return recipe.fingerprint("quick")


def report(tmp_path, fp, extra="") -> Path:
    path = tmp_path / "REPRODUCTION.md"
    path.write_text("# Reproducing\n\n" + extra + "\n".join(fingerprint_section(fp)) + "\n")
    return path


def test_a_current_report_passes(tmp_path, current):
    code, message = check(report(tmp_path, current))
    assert code == 0 and "is current" in message


def test_a_changed_arm_config_fails_and_names_the_arm(tmp_path, current, monkeypatch):
    path = report(tmp_path, current)
    scale = recipe.SCALES["quick"]
    arms = dict(scale.arms)
    arms["gn-decoder"] = dataclasses.replace(arms["gn-decoder"], sets=(*arms["gn-decoder"].sets, "optim.lr=1e-3"))
    monkeypatch.setitem(recipe.SCALES, "quick", dataclasses.replace(scale, arms=arms))
    code, message = check(path)
    assert code == 1 and "arm gn-decoder changed" in message and "arm base" not in message


def test_a_changed_arm_hash_and_a_code_edit_are_named(tmp_path, current):
    old = dict(current, arms={**current["arms"], "no-hf": "0" * 64}, code="1" * 64)
    code, message = check(report(tmp_path, old))
    assert code == 1 and "arm no-hf changed" in message and "model/loss code changed" in message
    # The demo preset is not part of the recipe: the reproduction must not move when the demo is retuned.
    assert all(j["pretrain_preset"] == "repro-pretrain" for j in recipe.build_arm_jobs(
        recipe.SCALES["cpu"], ["base"], (0,), Path("o"), "sample", "h"))


def test_only_an_explicit_stale_marker_passes_a_mismatch(tmp_path, current):
    old = dict(current, arms={**current["arms"], "base": "0" * 64})
    assert check(report(tmp_path, old))[0] == 1
    code, message = check(report(tmp_path, old, "<!-- reproduce-check: stale -->\n"))
    assert code == 0 and STALE_MESSAGE in message
    no_block = tmp_path / "bare.md"
    no_block.write_text("# Reproducing\n\nstale, but not marked\n")
    assert check(no_block)[0] == 1


def test_make_reproduce_check_passes_on_the_committed_report():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reproduce" / "reproduce_check.py")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    print(run.stdout)
