"""`litevae models`: the registry's rows as a table, or as JSON with --json, from the cached figures of
`litevae_cli.cli.model_figures` (no torch import, no model built; a test checks them against the registry)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import JsonOutOpt, user_errors, write_json


@user_errors
def models(
    json_out: JsonOutOpt = None,
    kind: Annotated[Optional[str], typer.Option(help="Only this kind: encoder, decoder or discriminator.")] = None,
    include_test: Annotated[bool, typer.Option("--all", help="Also list the *-tiny variants registered for "
                                                             "tests (hidden by default).")] = False,
) -> None:
    """List every registered model: name, kind, parameters and GFLOPs per 256x256 image (FLOP = 2 x MAC).

    Examples:\n
      litevae models\n
      litevae models --kind encoder --json -

      litevae models --all   (with the tiny test variants)
    """
    from litevae_cli.cli.model_figures import cached_rows

    rows = cached_rows(kind, include_test=include_test)
    if json_out is not None:
        write_json(json_out, rows)
        if str(json_out) == "-":
            return
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="litevae model registry (GFLOPs per 256x256 image, FLOP = 2 x MAC)", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for col, justify in (("name", "left"), ("kind", "left"), ("params M", "right"), ("GFLOPs", "right")):
        table.add_column(col, justify=justify, no_wrap=True)  # names and figures are never cut or wrapped
    table.add_column("description", ratio=1, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], f"{r['params'] / 1e6:.2f}", f"{r['gflops_256']:.1f}", r["description"])
    Console().print(table)
