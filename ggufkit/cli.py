"""The ``ggufkit`` command line: each command parses options and calls one library function."""
from __future__ import annotations

import sys

import click

from ggufkit.errors import GGUFKitError
from quant.errors import QuantError
from runtime.errors import ModelError

USER_ERRORS = (GGUFKitError, QuantError, ModelError, FileNotFoundError, IsADirectoryError, PermissionError)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ggufkit")
def cli() -> None:
    """Convert, quantize and run llama.cpp GGUF models."""


# --- commands are registered below this line (one small function each) ---


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit status 1."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except USER_ERRORS as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        click.echo(f"error: {msg}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
