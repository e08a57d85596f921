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


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--preset", default="deci-tiny", show_default=True,
              type=click.Choice(["deci-tiny", "llama-tiny", "super49b-4layer"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--shards", default=2, show_default=True, type=int)
def fixture(out_dir: str, preset: str, seed: int, shards: int) -> None:
    """Write a random-weight bf16 HF checkpoint (test fixture) into OUT_DIR."""
    from ggufkit.fixtures import make_checkpoint

    path = make_checkpoint(out_dir, preset=preset, seed=seed, n_shards=shards, progress=True)
    click.echo(str(path))


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
