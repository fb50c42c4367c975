"""What `gpu_bench.py` keeps: the results document, written after every arm, and the arms' time limits.

A GPU window is short and may end at any moment, so nothing is held back until the end:
- `Recorder.put` stores one arm's result and rewrites OUT/gpu_bench.json and OUT/gpu_bench.md at once
  (each through a temp file and a rename, so a reader never sees half a file);
- SIGINT and SIGTERM (`timeout -s INT`, a closing window) raise `Stopped` in the main thread; the bench
  records which arm was cut and writes both files before it exits;
- every arm runs under a wall-clock cap (`Budget.arm`, a SIGALRM timer: it also stops a compile that
  runs long) and none starts once the bench's overall budget is spent; what was not run says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Callable


class Stopped(BaseException):
    """SIGINT/SIGTERM arrived: stop measuring, keep what was measured."""


class ArmTimeout(BaseException):
    """An arm ran past its own cap."""


def _raise_stopped(signum, _frame):
    raise Stopped(signal.Signals(signum).name)


def _raise_timeout(_signum, _frame):
    raise ArmTimeout()


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _raise_stopped)
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGALRM, _raise_timeout)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Recorder:
    """The results document: `doc["arms"]` in run order, each {"name", "section", "status", ...}."""

    def __init__(self, out: Path, doc: dict, render: Callable[[dict], str]):
        self.out, self.doc, self.render = out, doc, render
        doc.setdefault("arms", [])
        out.mkdir(parents=True, exist_ok=True)
        self.flush()

    def put(self, row: dict) -> dict:
        self.doc["arms"].append(row)
        self.flush()
        return row

    def find(self, section: str, **match) -> list[dict]:
        return [r for r in self.doc["arms"] if r["section"] == section and r.get("status") == "ok"
                and all(r.get(k) == v for k, v in match.items())]

    def flush(self) -> None:
        self.doc["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        _write(self.out / "gpu_bench.json", json.dumps(self.doc, indent=1, default=str) + "\n")
        _write(self.out / "gpu_bench.md", self.render(self.doc))


class Budget:
    """The bench's overall time budget and each arm's cap."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock, self.end = clock, clock() + seconds

    def left(self) -> float:
        return self.end - self.clock()

    @contextlib.contextmanager
    def arm(self, cap: float):
        """Run the block for at most min(cap, budget left) seconds (ArmTimeout past that)."""
        limit = max(0.5, min(cap, self.left()))
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            yield limit
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)


def run_arm(rec: Recorder, budget: Budget, section: str, name: str, cap: float, fn: Callable[[], dict],
            min_left: float = 3.0, **labels) -> dict:
    """Run one arm under its cap and record it: ok (fn's dict), skipped, timeout, error or oom.
    `Stopped` (a signal) records the arm as stopped and propagates."""
    row = {"section": section, "name": name, **labels}
    if budget.left() < min_left:
        return rec.put({**row, "status": "not run", "why": f"bench budget spent ({budget.left():.0f} s left)"})
    t0 = time.perf_counter()
    try:
        with budget.arm(cap) as limit:
            row.update(fn())
        row.setdefault("status", "ok")
    except ArmTimeout:
        row.update(status="timeout", why=f"stopped at its {limit:.0f} s cap")
    except Stopped as sig:
        row.update(status="stopped", why=f"{sig.args[0]} during this arm")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rec.put(row)
        raise
    except Exception as e:  # an arm's failure is a figure too; the next arm still runs
        oom = "out of memory" in str(e).lower()
        row.update(status="oom" if oom else "error", why=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                   if str(e) else type(e).__name__)
        if not oom:
            row["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
    finally:
        _free_cuda()
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return rec.put(row)


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def skip(rec: Recorder, section: str, name: str, why: str, **labels) -> dict:
    """Record a part that cannot run here (a missing optional dependency, a file not in the tree) and say so."""
    print(f"skip: {section} {name}: {why}", flush=True)
    return rec.put({"section": section, "name": name, "status": "skipped", "why": why, **labels})
