"""`runtime.host_memory`: on CPU runs glibc keeps freed memory for reuse (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=-1),
once per process, never off the CPU or when LITEVAE_HOST_MEMORY=system; decided on a fake C library, then its
real effect (no page faults on a reallocated 64 MiB block) checked in child processes; the run record says what
was done."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import image_folder, write_preset

from litevae_cli.errors import UserError
from litevae_cli.runtime import host_memory
from litevae_cli.training.loop import train

CPU = torch.device("cpu")


class FakeLibc:
    def __init__(self, accept: bool = True):
        self.calls, self.accept = [], accept

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1 if self.accept else 0

    def gnu_get_libc_version(self):
        return b"2.99"


@pytest.fixture
def fresh(monkeypatch):
    """A process where keep_freed_memory has not run yet, with a fake glibc; returns the fake."""
    fake = FakeLibc()
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(host_memory, "glibc", lambda: fake)
    monkeypatch.setattr(host_memory, "preloaded_allocator", lambda: None)
    monkeypatch.delenv(host_memory.HOST_MEMORY_ENV, raising=False)
    return fake


def test_a_cpu_run_keeps_freed_memory_once(fresh, monkeypatch):
    chosen, why = host_memory.keep_freed_memory(CPU)
    assert chosen == "reuse" and "glibc 2.99" in why and "M_MMAP_MAX=0" in why
    assert fresh.calls == [(host_memory.M_MMAP_MAX, 0), (host_memory.M_TRIM_THRESHOLD, -1)]
    assert host_memory.keep_freed_memory(CPU) == (chosen, why) and len(fresh.calls) == 2  # once per process
    monkeypatch.setenv(host_memory.HOST_MEMORY_ENV, "system")  # too late for this process: the record says so
    chosen, why = host_memory.keep_freed_memory(CPU)
    assert chosen == "reuse" and "set earlier in this process" in why and len(fresh.calls) == 2


def test_nothing_changes_off_the_cpu_when_asked_or_without_glibc(fresh, monkeypatch):
    for device in (torch.device("cuda"), torch.device("mps")):
        chosen, why = host_memory.keep_freed_memory(device)
        assert chosen == "system" and why.startswith(device.type)
    monkeypatch.setenv(host_memory.HOST_MEMORY_ENV, "system")
    assert host_memory.keep_freed_memory(CPU) == ("system", "LITEVAE_HOST_MEMORY=system")
    assert fresh.calls == []
    monkeypatch.setenv(host_memory.HOST_MEMORY_ENV, "Reuse ")  # case and blanks are forgiven
    monkeypatch.setattr(host_memory, "glibc", lambda: None)
    assert host_memory.keep_freed_memory(CPU) == ("system", "not glibc: its malloc is left as it is")
    monkeypatch.setattr(host_memory, "glibc", lambda: FakeLibc(accept=False))
    assert host_memory.keep_freed_memory(CPU)[0] == "system" and host_memory._applied is None


def test_a_preloaded_allocator_is_left_alone(fresh, monkeypatch):
    """jemalloc or tcmalloc serving malloc (LD_PRELOAD): glibc's mallopt would not reach it, so nothing is set
    and the record names the allocator."""
    monkeypatch.setattr(host_memory, "preloaded_allocator", lambda: "jemalloc")
    chosen, why = host_memory.keep_freed_memory(CPU)
    assert chosen == "system" and why.startswith("jemalloc is this process's malloc") and fresh.calls == []
    assert host_memory._applied is None


def test_preloaded_allocator_reads_the_real_process():
    """In a process with no LD_PRELOAD, glibc serves malloc: no jemalloc/tcmalloc entry point is visible; with
    jemalloc preloaded (where the machine has it), it is named."""
    import ctypes.util

    code = "from litevae_cli.runtime.host_memory import preloaded_allocator as p; print(p())"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
    jemalloc = ctypes.util.find_library("jemalloc")
    if jemalloc is None:
        pytest.skip("no libjemalloc on this machine for the positive case")
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, LD_PRELOAD=jemalloc), capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "jemalloc"


def test_an_unknown_setting_is_one_line(fresh, monkeypatch):
    monkeypatch.setenv(host_memory.HOST_MEMORY_ENV, "jemalloc")
    with pytest.raises(UserError, match="LITEVAE_HOST_MEMORY='jemalloc': expected one of reuse, system"):
        host_memory.keep_freed_memory(CPU)


REALLOCATE = textwrap.dedent("""
    import resource, sys, torch
    from litevae_cli.runtime.host_memory import keep_freed_memory
    print(keep_freed_memory(torch.device("cpu"))[0])

    def faults(calls):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(calls):
            block = torch.ones(16 * 2**20)  # 64 MiB, above glibc's largest mmap threshold (32 MiB)
            del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults(20)  # torch's aligned requests need a little more than the block just freed: the heap grows a few
    print(faults(5))  # times (8 calls with glibc 2.36), then the freed block fits and is handed out again
""")


@pytest.mark.skipif(host_memory.glibc() is None, reason="glibc's mallopt only")
def test_reused_memory_is_not_faulted_in_again():
    counts = {}
    for setting in ("system", "reuse"):
        env = {"LITEVAE_HOST_MEMORY": setting, "THP_MEM_ALLOC_ENABLE": "0", "PATH": "/usr/bin:/bin"}
        run = subprocess.run([sys.executable, "-c", REALLOCATE], capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        applied, faults = run.stdout.split()
        assert applied == setting
        counts[setting] = int(faults)
    assert counts["system"] > 5 * 8000  # each 64 MiB block is a fresh mapping: 16384 pages of 4 KiB
    assert counts["reuse"] < 1000, counts  # the freed block is handed out again, already faulted in


def test_a_tiny_run_records_its_host_memory(tmp_path):
    preset = write_preset(tmp_path / "tiny.yaml", {"train": {"steps": 1, "precision": "fp32"}})
    assert train("pretrain", preset, image_folder(tmp_path / "img", n=2), tmp_path / "run", device="cpu") == 0
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["run"]
    assert record["host_memory"] in ("reuse", "system") and record["host_memory_reason"]
    assert record["host_memory"] == host_memory.keep_freed_memory(CPU)[0]


def test_make_bench_measures_both_settings_in_their_own_processes(tmp_path):
    speed = Path(__file__).resolve().parents[1] / "benchmarks" / "speed"
    run = subprocess.run([sys.executable, str(speed / "run.py"), "--smoke", "--sections", "host-memory",
                          "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    doc = json.loads((tmp_path / "host-memory.json").read_text())
    applied = {(r["workload"], r["setting"]): r["host_memory"] for r in doc["runs"]}
    expected = "reuse" if host_memory.glibc() is not None else "system"
    assert applied == {("litevae-tiny b2", "system"): "system", ("litevae-tiny b2", "reuse"): expected}
    assert all(r["img_s"]["median"] > 0 and r["peak_rss_mib"]["median"] > 0 for r in doc["rows"])
    assert set(doc["reuse_over_system"]) == {"litevae-tiny b2"}
    md = (tmp_path / "results.md").read_text()
    assert "## 9. Host memory kept for reuse" in md and "| litevae-tiny b2 | system (system) |" in md


def test_memory_section_measures_peak_rss_under_both_settings(tmp_path):
    """`make bench`'s memory section runs each (model, precision) once with freed memory kept for reuse and once
    with the system's malloc (reuse costs peak RSS: BENCHMARKS.md), and its table pairs each with its peer."""
    speed = Path(__file__).resolve().parents[1] / "benchmarks" / "speed"
    run = subprocess.run([sys.executable, str(speed / "run.py"), "--smoke", "--sections", "memory",
                          "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    expected = "reuse" if host_memory.glibc() is not None else "system"
    applied = {}
    for f in tmp_path.glob("memory-*.json"):
        doc = json.loads(f.read_text())
        (row,) = doc["rows"]
        applied[(row["model"], f.stem.rsplit("-", 1)[1])] = doc["machine"]["host_memory"]
        assert row["forward_peak_mb"] > 0 and row["batch"] == 2
    models = {m for m, _ in applied}
    assert len(models) == 2 and applied == {(m, s): (expected if s == "reuse" else "system")
                                            for m in models for s in ("reuse", "system")}
    md = (tmp_path / "results.md").read_text()
    assert "| host memory | forward peak MiB |" in md and "| litevae-s | bf16 | CL | system |" in md
