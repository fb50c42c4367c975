"""`litevae models`: the registry as a table (or JSON), with params and GFLOPs at 256x256."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from litevae_cli.cli.common import user_errors


@user_errors
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    kind: Annotated[Optional[str], typer.Option(help="Only this kind: encoder, decoder or discriminator.")] = None,
    include_test: Annotated[bool, typer.Option("--test-variants/--no-test-variants",
                                               help="Include the tiny variants registered for tests.")] = True,
) -> None:
    """List every registered model: name, kind, parameters and GFLOPs per 256x256 image (FLOP = 2 x MAC).

    Examples:\n
      litevae models\n
      litevae models --kind encoder --json
    """
    from litevae_cli.errors import UserError
    from litevae_cli.models.complexity import model_complexity
    from litevae_cli.models.registry import KINDS, get_entry, list_models

    if kind is not None and kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    rows = []
    for name in list_models(kind, include_test=include_test):
        row = model_complexity(name)
        row["test_variant"] = get_entry(name).test_variant
        row["description"] = get_entry(name).description
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="litevae model registry (GFLOPs per 256x256 image, FLOP = 2 x MAC)")
    for col, justify in (("name", "left"), ("kind", "left"), ("params (M)", "right"), ("GFLOPs@256", "right"),
                         ("description", "left")):
        table.add_column(col, justify=justify)
    for r in sorted(rows, key=lambda r: (r["kind"], r["name"])):
        table.add_row(r["name"], r["kind"], f"{r['params'] / 1e6:.2f}", f"{r['gflops_256']:.1f}", r["description"])
    Console().print(table)
