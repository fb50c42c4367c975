"""DataLoader worker processes: their set-up, their death with the parent, and who consumes what.

`worker_init(parent_pid, worker_id)` (the loaders' worker_init_fn): one torch thread; SIGINT/SIGTERM
ignored (`litevae_cli.jobs.stopping`: the main process stops the loop); inherited output-folder locks
closed (so a lock dies with the main process); and the worker dies with its parent: on Linux the
parent-death signal (prctl PR_SET_PDEATHSIG = SIGKILL; SIGTERM would be ignored, see above), elsewhere
or when prctl fails a daemon thread polling os.getppid() every `WATCHDOG_S` that exits the worker when
the parent is gone. A parent that died before the signal was armed is caught by reading getppid()
before and after arming it (and by a parent of 1 where the loader's builder was another pid). Caveat of the signal: Linux sends it when the THREAD that forked the
worker exits; the loaders' workers are forked by the thread that iterates the loader, which in this
project is always the main thread.

`consumer()`: (worker id, workers) of the calling process ((0, 1) in the main process).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from functools import partial

import torch
from torch.utils.data import get_worker_info

from litevae_cli.files.outputs import release_inherited_locks
from litevae_cli.jobs.stopping import ignore_stop_signals

PR_SET_PDEATHSIG = 1
WATCHDOG_S = 0.5


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send `sig` to this process when its parent dies; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, period: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(period)


def start_parent_watchdog(parent_pid: int, period: float = WATCHDOG_S) -> threading.Thread:
    """A daemon thread that ends this process once its parent is no longer `parent_pid`."""
    t = threading.Thread(target=_watch_parent, args=(parent_pid, period), name="parent-watchdog", daemon=True)
    t.start()
    return t


def die_with_parent(parent_pid: int) -> str:
    """Make this process end when its parent dies -> "signal" or "watchdog" (what was set up).
    `parent_pid`: the pid that built the loader (normally the parent; another process may iterate it)."""
    ppid = os.getppid()
    how = "signal" if set_parent_death_signal() else "watchdog"
    if os.getppid() != ppid or (ppid == 1 and parent_pid != 1):  # the parent died before the signal was armed
        os._exit(1)
    if how == "watchdog":
        start_parent_watchdog(ppid)
    return how


def worker_init(parent_pid: int, _worker_id: int) -> None:
    torch.set_num_threads(1)
    die_with_parent(parent_pid)
    ignore_stop_signals()
    release_inherited_locks()


def loader_kwargs(workers: int, persistent: bool) -> dict:
    """DataLoader keyword arguments shared by the train and eval loaders."""
    kw = dict(num_workers=workers, pin_memory=torch.cuda.is_available())
    if workers > 0:
        kw.update(persistent_workers=persistent, prefetch_factor=2, worker_init_fn=partial(worker_init, os.getpid()))
    return kw


def consumer() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)
