"""Stopping cleanly: SIGTERM/SIGINT and a dead data-loader worker become a flag the loops check.

The stop semantics every long command shares (training, encode-dataset, eval):
- The main process owns the signals. `StopSignal` turns SIGTERM/SIGINT into a flag (a second SIGINT
  interrupts at once). DataLoader workers ignore both (`ignore_stop_signals`, run by their
  worker_init_fn), so a signal to the whole process group (`kill -TERM -- -PGID`, Ctrl-C in a
  terminal, a job scheduler) reaches the loop instead of killing the workers under it.
- Loops check the flag BEFORE fetching the next batch (`batches`, `requested`): the batch in hand is
  finished, the next one is not started.
- A worker that dies anyway (the OOM killer, a crash) is a stop too. PyTorch's SIGCHLD handler, which
  raises in the middle of whatever the main process is doing (an optimizer step, a checkpoint
  write), is replaced by one that only records the death (`watch`), and the loader's "worker exited
  unexpectedly" error at the next fetch becomes a stop (`fetch`).
- `reason` is the start of the command's one-line message; `exit_code` is 128 + the signal (the one
  received, or the one that killed the worker).
- Under torchrun, a peer rank that dies breaks the next collective on the others: `peers_guard` turns that
  error into one line ("rank 0: peer rank 1 is gone; last checkpoint step N") and exit status 1 (SIGTERM,
  which the agent sends on seeing the dead rank, is ignored from then on so it cannot cut the line), so the
  elastic agent restarts the group (`--max-restarts`) and the rerun resumes from last.pt. The process group
  is then aborted, not destroyed (`runtime.open`). torchrun's agent forwards SIGTERM to every rank and
  kills them `--shutdown-timeout` seconds later (default 30, env TORCH_ELASTIC_SHUTDOWN_TIMEOUT).
- Test hook (`fault_injection_point`): LITEVAE_TEST_KILL_AT_STEP=N makes rank LITEVAE_TEST_KILL_RANK (default 1)
  exit at once (os._exit) when training reaches step N, on the first torchrun attempt only.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from pathlib import Path
from typing import Iterator, Optional

from litevae_cli.errors import Stopped, one_line

PEER_LOST_EXIT = 1  # non-zero: torchrun's agent restarts the group when --max-restarts allows
# What gloo, NCCL and the TCP store say when the other side of a collective is gone.
PEER_LOSS_MARKS = ("connection reset by peer", "connection closed by peer", "broken pipe", "connection refused",
                   "socket closed", "timed out waiting", "nccl communicator was aborted", "nccl error",
                   "remote process exited", "processgroupgloo", "processgroupnccl", "gloo")


def ignore_stop_signals() -> None:
    """In a DataLoader worker: SIGINT and SIGTERM are the main process's to act on."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopSignal:
    """A context manager: while inside, SIGTERM/SIGINT and dead workers set `requested` (module docstring)."""

    def __init__(self):
        self.signum: Optional[int] = None  # the stop signal received
        self.worker: Optional[str] = None  # what happened to a data-loader worker that died
        self.worker_signal: Optional[int] = None  # the signal that killed it, when known
        self._old: dict = {}
        self._workers: tuple[int, ...] = ()
        self._iterators: list = []  # watched loader iterators, shut down before PyTorch's handler returns

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopSignal":
        if hasattr(signal, "SIGTERM") and _in_main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for it in self._iterators:  # its workers end while a dead one is still only recorded, not raised
            getattr(it, "_shutdown_workers", lambda: None)()
        self._iterators.clear()
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
        if exc and exc[1] is not None and _in_main_thread() and hasattr(signal, "SIGTERM") and is_peer_loss(exc[1]):
            from litevae_cli.runtime import process_rank

            if process_rank()[1] > 1:  # on the way out with the peer-loss line: the agent's SIGTERM must not cut it
                signal.signal(signal.SIGTERM, signal.SIG_IGN)

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.worker is not None

    @property
    def reason(self) -> str:
        if self.signum is not None:
            return f"{signal.Signals(self.signum).name} received"
        return self.worker or "stopped on another rank"

    @property
    def exit_code(self) -> int:
        sig = self.signum or self.worker_signal
        return 128 + sig if sig else (1 if self.worker else 128 + signal.SIGTERM)

    # ------------------------------------------------------------------ data-loader workers
    def watch(self, iterator) -> None:
        """Call right after `iter(loader)` started its workers: record their deaths instead of
        letting PyTorch raise at an arbitrary point of the main process."""
        if not hasattr(signal, "SIGCHLD") or not _in_main_thread() or "Multi" not in type(iterator).__name__:
            return  # no worker processes (workers=0), or not a platform with SIGCHLD
        self._workers = tuple(w.pid for w in getattr(iterator, "_workers", ()))
        self._iterators.append(iterator)
        old = signal.signal(signal.SIGCHLD, self._child_exited)
        self._old.setdefault(signal.SIGCHLD, old)

    def _child_exited(self, signum, frame) -> None:
        if not hasattr(os, "waitid"):
            return  # the next fetch reports the death
        for pid in self._workers:
            try:  # WNOWAIT: look without reaping, so multiprocessing still sees its child
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except OSError:
                continue
            if info is None or (info.si_code == os.CLD_EXITED and info.si_status == 0):
                continue  # still running, or a normal exit at the end of an epoch
            if info.si_code == os.CLD_EXITED:
                self.worker = f"data loader worker {pid} exited with status {info.si_status}"
            else:
                self.worker_signal = info.si_status
                name = signal.Signals(info.si_status).name if info.si_status in signal.valid_signals() else ""
                self.worker = f"data loader worker {pid} was killed by {name or f'signal {info.si_status}'}"

    def fetch(self, iterator):
        """next(iterator); None at the end of the data, or when a worker died (then `requested` is set)."""
        try:
            return next(iterator)
        except StopIteration:
            return None
        except RuntimeError as err:
            if "DataLoader worker" not in str(err):
                raise
            self.worker = self.worker or one_line(err).replace("DataLoader", "data loader")
            return None

    def batches(self, loader) -> Iterator:
        """The loader's batches; ends early once a stop is requested (checked before each fetch)."""
        it = iter(loader)
        self.watch(it)
        while not self.requested:
            batch = self.fetch(it)
            if batch is None:
                return
            yield batch


# ---------------------------------------------------------------------- peer ranks under torchrun
def is_peer_loss(err: BaseException) -> bool:
    """Whether `err`, raised by a collective, means a peer rank is gone (or stopped answering): torch's DistError
    types (by name: only the runtime imports torch.distributed) or a RuntimeError saying so."""
    if any(cls.__name__ == "DistError" for cls in type(err).__mro__):  # DistBackendError, DistNetworkError, ...
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in PEER_LOSS_MARKS)


def checkpoint_step(run_dir: Path) -> Optional[int]:
    """The step of the run's newest checkpoint (memory-mapped: only the step is read); None when none is readable."""
    import torch

    from litevae_cli.files.checkpoint import latest_checkpoint

    path = latest_checkpoint(run_dir)
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"]) if path else None
    except Exception:  # noqa: BLE001 - only for the peer-loss message
        return None


@contextlib.contextmanager
def peers_guard(rank: int, world_size: int, run_dir: Path):
    """Inside, a collective that fails because a peer rank is gone becomes a `Stopped` with one line naming
    the step of the run's last checkpoint, exit status `PEER_LOST_EXIT`."""
    try:
        yield
    except RuntimeError as err:
        if world_size < 2 or not is_peer_loss(err):
            raise
        peer = f"peer rank {1 - rank}" if world_size == 2 else "a peer rank"
        step = checkpoint_step(run_dir)
        saved = f"last checkpoint step {step}" if step is not None else "no checkpoint yet"
        raise Stopped(f"rank {rank}: {peer} is gone; {saved}; rerun the same command (or torchrun "
                      f"--max-restarts) to resume ({_cause(err)})", PEER_LOST_EXIT) from None


def _cause(err: BaseException) -> str:
    """The error's first line without the C++ source location gloo and NCCL put in front."""
    return re.sub(r"^\[[^\]]*\]\s*", "", one_line(err, 400))[:160]


def fault_injection_point(rank: int, step: int) -> None:
    """The fault injection of the elastic-restart test (module docstring); nothing when unset."""
    at = os.environ.get("LITEVAE_TEST_KILL_AT_STEP")
    if (at and step == int(at) and rank == int(os.environ.get("LITEVAE_TEST_KILL_RANK", "1"))
            and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"):
        os._exit(int(os.environ.get("LITEVAE_TEST_KILL_CODE", "9")))
