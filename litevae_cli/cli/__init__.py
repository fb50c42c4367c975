"""The `litevae` Typer app: one module per subcommand, registered here.

Subcommand modules import torch only inside their command bodies, so `litevae --help` stays fast.
"""

from __future__ import annotations

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
    app()
