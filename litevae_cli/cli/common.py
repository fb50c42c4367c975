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

# Every option that several commands take is defined here, once: one type, one default, one help text
# (tests/test_layout.py walks the app and fails on a second meaning). A default of None means "the
# library's default" (the called function owns it), never a second default written in a command.
MODEL_HELP = "Checkpoint .pt, run directory (its last checkpoint), export .safetensors or diffusers folder."
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help=MODEL_HELP)]  # files.model_file.load_autoencoder resolves it

DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cuda, mps or cpu (default: the best available).")]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="auto, fp32, bf16 or fp16. auto: bf16 "
                                                     "autocast on CUDA and on CPUs with native bf16 (AMX, "
                                                     "AVX512-BF16), fp32 elsewhere.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per batch (default: the "
                                                     "preset's when training, else the command's).")]
DATA = typer.Option("--data", help="Images: a folder, one image, a glob ('photos/*.jpg'), a .txt/.csv list of "
                    "paths, WebDataset shards (dir/train-{000000..000009}.tar), a Hugging Face dataset "
                    "(hf:NAME_OR_PATH[:SPLIT][#COLUMN]: a save_to_disk folder, parquet, imagefolder or Hub name; "
                    "pip install 'litevae[hf]') or sample / sample-holdout / sample-all (the embedded photographs).")
DataOpt = Annotated[str, DATA]
OutDirOpt = Annotated[Path, typer.Option("--out", help="Output directory (rerunning a training or encode-dataset "
                                         "command with the same --out resumes it).")]
ResolutionOpt = Annotated[Optional[str], typer.Option(
    "--resolution", help="Square size in pixels (shorter side resized, then center-cropped; a multiple of 8; "
    "default 256); eval takes a comma list, e.g. 256,512.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N images of the source.")]
JsonOutOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON to this file "
                                                    "('-': print the JSON instead).")]
EmaOpt = Annotated[bool, typer.Option("--ema/--no-ema", help="The EMA weights when the file has them; --no-ema: the raw "
                                     "weights.")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=0, help="Data-loading worker processes per "
                                                   "rank (default: the preset's when training, 0 for eval, "
                                                   "min(4, CPU cores) for encode-dataset).")]
CompileOpt = Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the models (and "
                                                   "LPIPS) in place: slower first steps, faster after; inductor "
                                                   "unless LITEVAE_COMPILE_BACKEND names another backend. "
                                                   "Training: sets runtime.compile.")]
WeightsDirOpt = Annotated[Optional[Path], typer.Option("--weights-dir", help="Folder searched first for the "
                                                       "reference weights (LPIPS backbone, Inception), before "
                                                       "the torch hub cache; --download-weights stores them here.")]
CropOpt = Annotated[str, typer.Option("--crop", help="center (resize the shorter side + center crop) or adm.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="Preset name (see presets/) or path to a YAML file.")]
DownloadWeightsOpt = Annotated[bool, typer.Option(
    "--download-weights/--no-download-weights", help="Fetch missing reference weights (LPIPS backbone, Inception) into --weights-dir or the "
    "torch hub cache, each checked against a pinned sha256; from $LITEVAE_WEIGHTS_MIRROR when set. "
    "Same as LITEVAE_DOWNLOAD_WEIGHTS=1.")]


def check_json_out(path: Optional[Path]) -> None:
    """Before any work: --json PATH can be written (`-`, stdout, always can)."""
    from litevae_cli.files.outputs import check_out_file

    if path is not None and str(path) != "-":
        check_out_file(path, "--json")


def write_json(path: Path, obj) -> None:
    """Write a command's `--json` report (parents created) and say where; `-` prints it instead."""
    import json

    from litevae_cli.files import atomic

    if str(path) == "-":
        typer.echo(json.dumps(obj, indent=2))
        return
    atomic.write_text(path, json.dumps(obj, indent=2) + "\n")  # a failed write: one line naming the file
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
