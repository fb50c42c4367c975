"""Progress display for long jobs, silent off rank 0.

`make_progress` is the rich bar of encode-dataset, eval and inspect-latents. Training uses
`TrainProgress`: one line laid out by `train_line` for the terminal's width, in this order: step/total,
a bar, img/s and ETA (these fit at 80 columns), then the loss terms as width allows. Terms that have
been 0 at every report so far (the adversarial loss before the discriminator starts) are left out.
Without a terminal (logs, batch jobs) the same facts, without the bar, are printed as one plain line
per report.
"""

from __future__ import annotations

import time

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

BAR_MIN, BAR_MAX = 10, 30  # bar width in columns


def make_progress(enabled: bool = True) -> Progress:
    """A Progress with description, bar, done/total, elapsed, ETA and a free `info` text field.

    Use as `with make_progress(rt.is_main) as p: task = p.add_task("encode", total=n, info="")`.
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, disable=not enabled, transient=False, refresh_per_second=4)


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def train_line(step: int, total: int, img_per_s: float | None, eta_s: float | None, terms: dict,
               width: int | None = None) -> str:
    """`step/total [bar] N img/s eta M:SS term value ...`, at most `width` columns; no bar when width is None."""
    head = f"{step}/{total}"
    tail = f"{img_per_s:.1f} img/s" if img_per_s is not None else "- img/s"
    tail += f" eta {format_eta(eta_s)}"
    parts = [head]
    if width is not None:
        room = width - len(head) - len(tail) - 4  # spaces and brackets
        bar = max(0, min(BAR_MAX, room - 24 if room - 24 >= BAR_MIN else room))
        if bar >= 3:
            filled = int(bar * min(step / total, 1.0)) if total else bar
            parts.append("[" + "=" * filled + " " * (bar - filled) + "]")
    parts.append(tail)
    line = " ".join(parts)
    for key, value in terms.items():
        piece = f" {key} {value:.4g}"
        if width is not None and len(line) + len(piece) > width:
            break
        line += piece
    return line


class _LineColumn(ProgressColumn):
    def __init__(self, owner: "TrainProgress"):
        super().__init__()
        self.owner = owner

    def render(self, task) -> Text:
        return Text(self.owner.line(self.owner.progress.console.width - 1), no_wrap=True, overflow="crop")


class TrainProgress:
    """The training status: `report(step, img_per_s, terms)` at each log step; a live line on a terminal
    (`live`), else `print` gets one plain line per report."""

    def __init__(self, total: int, start_step: int, live: bool, print_fn=print, console=None):
        self.total, self.start_step, self.print = total, start_step, print_fn
        self.step, self.img_per_s, self.terms, self.nonzero = start_step, None, {}, set()
        self.t0, self.live = time.perf_counter(), live
        self.progress = Progress(_LineColumn(self), disable=not live, transient=False, refresh_per_second=4,
                                 console=console)
        self.task = self.progress.add_task("train", total=total, completed=start_step)

    def eta(self) -> float | None:
        done = self.step - self.start_step
        return (self.total - self.step) * (time.perf_counter() - self.t0) / done if done > 0 else None

    def line(self, width: int | None) -> str:
        shown = {k: v for k, v in self.terms.items() if k in self.nonzero}
        return train_line(self.step, self.total, self.img_per_s, self.eta(), shown, width)

    def report(self, step: int, img_per_s: float, terms: dict) -> None:
        self.step, self.img_per_s, self.terms = step, img_per_s, dict(terms)
        self.nonzero |= {k for k, v in terms.items() if v != 0}
        self.progress.update(self.task, completed=step)
        if not self.live:
            self.print("step " + self.line(None))

    def advance(self, step: int) -> None:
        self.step = step
        self.progress.update(self.task, completed=step)

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)
