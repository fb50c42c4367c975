"""`python -m litevae_cli` runs the same Typer app as the `litevae` console script."""

from litevae_cli.cli import main

if __name__ == "__main__":
    main()
