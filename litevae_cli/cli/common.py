"""What every subcommand shares: option aliases and the one-line error contract.

`UserError` (and the data layer's DataError, a subclass) becomes one line on stderr and exit code 2,
with no traceback; so does an OSError no command turned into one (a disk that fails mid-write).
`Stopped` (a stop signal, a dead loader worker) prints its one line and exits with its code
(128 + signal). Commands import torch inside their bodies so `litevae --help` stays fast.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from litevae_cli.errors import Stopped, UserError, one_line

EXIT_USER_ERROR = 2

# What every MODEL argument accepts (checkpoint.load_autoencoder resolves it).
MODEL_HELP = "Checkpoint .pt, run directory (its last checkpoint), export .safetensors or diffusers folder."

DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cuda, mps or cpu (default: the best available).")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="fp32, bf16 or fp16.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch.")]
OutDirOpt = Annotated[Path, typer.Option("--out", help="Output directory.")]
JsonOutOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON to this file.")]
DownloadWeightsOpt = Annotated[bool, typer.Option(
    "--download-weights", help="Fetch missing reference weights (LPIPS backbone, Inception) into --weights-dir or the "
    "torch hub cache, each checked against a pinned sha256; from $LITEVAE_WEIGHTS_MIRROR when set. "
    "Same as LITEVAE_DOWNLOAD_WEIGHTS=1.")]


def write_json(path: Path, obj: dict) -> None:
    """Write a command's `--json` report (parents created) and say where."""
    import json

    from litevae_cli.files.outputs import writing

    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2) + "\n")
    typer.echo(f"wrote {path}")


def fail(message: str) -> None:
    """Print one line to stderr and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(EXIT_USER_ERROR)


def user_errors(fn):
    """Decorator: turn UserError into the one-line error contract."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(one_line(err, 10_000))
        except OSError as err:
            fail(f"{f'{err.filename}: ' if err.filename else ''}{err.strerror or one_line(err)}")
        except Stopped as stop:
            typer.secho(one_line(stop, 10_000), err=True)
            raise typer.Exit(stop.code) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            sys.exit(130)

    return wrapper
