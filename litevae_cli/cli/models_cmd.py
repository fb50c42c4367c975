"""`litevae models`: the registry's rows (`models.complexity.registry_rows`) as a table, or as JSON with --json."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import JsonOutOpt, user_errors, write_json


@user_errors
def models(
    json_out: JsonOutOpt = None,
    kind: Annotated[Optional[str], typer.Option(help="Only this kind: encoder, decoder or discriminator.")] = None,
    include_test: Annotated[bool, typer.Option("--test-variants/--no-test-variants",
                                               help="Include the tiny variants registered for tests.")] = True,
) -> None:
    """List every registered model: name, kind, parameters and GFLOPs per 256x256 image (FLOP = 2 x MAC).

    Examples:\n
      litevae models\n
      litevae models --kind encoder --json -
    """
    from litevae_cli.models.complexity import registry_rows

    rows = registry_rows(kind, include_test=include_test)
    if json_out is not None:
        write_json(json_out, rows)
        if str(json_out) == "-":
            return
    print_table(rows)


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="litevae model registry (GFLOPs per 256x256 image, FLOP = 2 x MAC)")
    for col, justify in (("name", "left"), ("kind", "left"), ("params (M)", "right"), ("GFLOPs@256", "right"),
                         ("description", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["name"], r["kind"], f"{r['params'] / 1e6:.2f}", f"{r['gflops_256']:.1f}", r["description"])
    Console().print(table)
