"""One rich progress bar for every long job (training, encoding, evaluation), silent off rank 0."""

from __future__ import annotations

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


def make_progress(enabled: bool = True) -> Progress:
    """A Progress with description, bar, done/total, elapsed, ETA and a free `info` text field.

    Use as `with make_progress(rt.is_main) as p: task = p.add_task("encode", total=n, info="")`.
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, disable=not enabled, transient=False, refresh_per_second=4)
