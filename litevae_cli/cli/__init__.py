"""The `litevae` Typer app: one module per subcommand, registered here.

Subcommand modules import torch only inside their command bodies, so `litevae --help` stays fast.
Python warnings (`cli_warnings`, installed before every command): library notes that are not for the
user of the CLI (`NOISE`) are dropped; every other warning is one line, `warning: <message>`, instead of
Python's two (the message, then the library's source line).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated, Optional

import typer

from litevae_cli import __version__
from litevae_cli.cli import help_style
from litevae_cli.cli.encode_cmd import encode_dataset
from litevae_cli.cli.eval_cmd import eval_command
from litevae_cli.cli.export_cmd import export
from litevae_cli.cli.inspect_cmd import inspect_latents_command
from litevae_cli.cli.models_cmd import models
from litevae_cli.cli.reconstruct_cmd import reconstruct
from litevae_cli.cli.train_cmd import distill, finetune, pretrain

help_style.apply()
app = typer.Typer(
    name="litevae",
    help="Train, evaluate and use LiteVAE autoencoders (wavelet-encoder VAEs for latent diffusion, arXiv 2405.14477).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# (category, message regex) of library warnings that say nothing to the user of the CLI.
NOISE: tuple[tuple[type[Warning], str], ...] = (
    # torch's weights_only unpickler on files it refuses anyway (files.checkpoint says why, in one line)
    (UserWarning, r"Detected pickle protocol \d+ in the checkpoint"),
    (FutureWarning, r"You are using `torch.load` with `weights_only=False`"),
    (UserWarning, r"TypedStorage is deprecated"),
    (FutureWarning, r".*torch\.jit.*"),  # the FID Inception is TorchScript (metrics.fid)
    # torchvision builders as lpips calls them
    (UserWarning, r"The parameter 'pretrained' is deprecated"),
    (UserWarning, r"Arguments other than a weight enum or `None` for 'weights' are deprecated"),
    (UserWarning, r"The `local_dir_use_symlinks` argument is deprecated"),  # huggingface_hub, as files.hub calls it
)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning: `warning: <message>` on one line (whitespace collapsed), no source line."""
    text = " ".join(str(message).split())
    try:
        (file or sys.stderr).write(f"warning: {text}\n")
    except OSError:  # stderr gone (a closed pipe): a warning is not worth a crash
        pass


def cli_warnings() -> None:
    """Install the CLI's warning policy (module docstring); diffusers' logger (e.g. "You should probably
    TRAIN this model") is kept to errors unless DIFFUSERS_VERBOSITY says otherwise."""
    warnings.showwarning = _one_line_warning
    for category, pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if os.environ["DIFFUSERS_VERBOSITY"] == "error" and "diffusers" in sys.modules:  # imported: its logger read it then
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"litevae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """LiteVAE toolkit."""
    cli_warnings()


# One line per subcommand, in workflow order: train, evaluate, use, inspect, registry.
app.command("pretrain")(pretrain)
app.command("finetune")(finetune)
app.command("distill")(distill)
app.command("eval")(eval_command)
app.command("encode-dataset")(encode_dataset)
app.command("reconstruct")(reconstruct)
app.command("inspect-latents")(inspect_latents_command)
app.command("export")(export)
app.command("models")(models)

def main() -> None:
    cli_warnings()  # before the app parses anything (the root callback installs it again for CliRunner)
    app()
