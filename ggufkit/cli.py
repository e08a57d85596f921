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


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("inp", metavar="IN.gguf", type=click.Path(dir_okay=False))
@click.argument("args", metavar="[OUT.gguf] TYPE [NTHREADS]", nargs=-1, required=True)
@click.option("--allow-requantize", is_flag=True, help="Allow requantizing already-quantized tensors.")
@click.option("--leave-output-tensor", is_flag=True, help="Leave output.weight un(re)quantized.")
@click.option("--pure", is_flag=True, help="No k-quant mixture: every tensor gets the same type.")
@click.option("--imatrix", type=click.Path(dir_okay=False), help="Importance matrix (GGUF or legacy .dat).")
@click.option("--include-weights", multiple=True, help="Use the imatrix only for tensors containing this.")
@click.option("--exclude-weights", multiple=True, help="Do not use the imatrix for tensors containing this.")
@click.option("--output-tensor-type", help="ggml type for output.weight.")
@click.option("--token-embedding-type", help="ggml type for token_embd.weight.")
@click.option("--tensor-type", multiple=True, help="PATTERN=TYPE (regex; first match wins).")
@click.option("--tensor-type-file", type=click.Path(dir_okay=False), help="File of PATTERN=TYPE entries.")
@click.option("--recipe", help="Named recipe replacing llama.cpp's mixture: dynamic-gate.")
@click.option("--dry-run", is_flag=True, help="Print the planned types and sizes only.")
@click.option("--backend", default="numba", show_default=True, type=click.Choice(["numba", "numpy"]))
def quantize(inp, args, tensor_type_file, dry_run, **opts) -> None:
    """Quantize a GGUF like llama-quantize: IN.gguf [OUT.gguf] TYPE [NTHREADS]."""
    from ggufkit.quantize import parse_positional, quantize_file, read_tensor_type_file

    out, ftype, nthreads = parse_positional(inp, args, dry_run=dry_run)
    tensor_types = list(opts.pop("tensor_type")) + read_tensor_type_file(tensor_type_file)
    report = quantize_file(inp, out, ftype, nthreads, tensor_types=tensor_types, dry_run=dry_run,
                           progress=True, **opts)
    for w in report.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(report.table() if dry_run else report.table().splitlines()[-1])


@cli.command()
@click.argument("inp", metavar="IN.gguf", type=click.Path(dir_okay=False))
@click.argument("out", metavar="OUT.gguf", type=click.Path(dir_okay=False))
@click.option("--outtype", default="f16", show_default=True, type=click.Choice(["f32", "f16", "bf16"]))
@click.option("--threads", type=int, help="Threads (default: all).")
def dequantize(inp, out, outtype, threads) -> None:
    """Write every quantized weight of IN.gguf as f32/f16/bf16 (norms and 1-D tensors kept)."""
    from ggufkit.quantize import dequantize_file

    report = dequantize_file(inp, out, outtype, threads, progress=True)
    click.echo(report.table().splitlines()[-1])


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
