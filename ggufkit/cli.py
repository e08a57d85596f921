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


@cli.command("run")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-p", "--prompt", required=True, help="Prompt text.")
@click.option("-n", "--n-predict", default=128, show_default=True, type=int, help="Tokens to generate.")
@click.option("-c", "--ctx-size", type=int, help="Context size (default: prompt + n).")
@click.option("--temp", default=0.8, show_default=True, type=float, help="Temperature; 0 is greedy.")
@click.option("--top-k", default=40, show_default=True, type=int)
@click.option("--top-p", default=0.95, show_default=True, type=float)
@click.option("--min-p", default=0.05, show_default=True, type=float)
@click.option("--repeat-penalty", default=1.0, show_default=True, type=float)
@click.option("--seed", type=int, help="RNG seed (default: random).")
@click.option("-t", "--threads", type=int, help="Threads (default: all).")
def run_cmd(model, prompt, n_predict, ctx_size, temp, top_k, top_p, min_p, repeat_penalty, seed, threads) -> None:
    """Generate text from MODEL (GGUF: llama, deci, gemma3), streamed to stdout."""
    from runtime.generate import SamplingParams, run

    params = SamplingParams(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed)
    run(model, prompt, n_predict, params, threads, ctx_size, err=sys.stderr)


@cli.command("chat")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--system", help="System prompt.")
@click.option("--reasoning", type=click.Choice(["on", "off"]), help="Switch reasoning as the template expects.")
@click.option("--json", "json_mode", is_flag=True, help="One JSON reply per line (content, reasoning, tool_calls).")
@click.option("--tools", "tools_file", type=click.Path(dir_okay=False), help="JSON file with a list of tools.")
@click.option("--temp", default=0.0, show_default=True, type=float)
@click.option("--top-p", default=0.95, show_default=True, type=float)
@click.option("-n", "--max-tokens", default=1024, show_default=True, type=int)
@click.option("-c", "--ctx-size", default=4096, show_default=True, type=int)
@click.option("--seed", type=int)
@click.option("-t", "--threads", type=int)
def chat_cmd(model, system, reasoning, json_mode, tools_file, temp, top_p, max_tokens, ctx_size, seed, threads) -> None:
    """Chat with MODEL using its chat template: one message per stdin line."""
    from runtime.chat import chat_loop
    from runtime.generate import SamplingParams

    chat_loop(model, system, reasoning, json_mode, threads, SamplingParams(temp=temp, top_p=top_p, seed=seed),
              ctx_size, max_tokens, tools_file)


@cli.command("perplexity")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-f", "--file", "text_file", type=click.Path(dir_okay=False), help="Text file to score.")
@click.option("-c", "--ctx-size", default=512, show_default=True, type=int)
@click.option("--chunks", default=-1, show_default=True, type=int, help="Max chunks (-1: all).")
@click.option("-b", "--batch-size", default=2048, show_default=True, type=int)
@click.option("-t", "--threads", type=int)
@click.option("--kl-divergence-base", type=click.Path(dir_okay=False),
              help="Logits file: written (with -f) or read (with --kl-divergence).")
@click.option("--kl-divergence", is_flag=True, help="Compare against --kl-divergence-base.")
def perplexity_cmd(model, text_file, ctx_size, chunks, batch_size, threads, kl_divergence_base, kl_divergence) -> None:
    """Perplexity of MODEL on a text file, exactly as llama-perplexity computes it."""
    from runtime.perplexity import perplexity_file

    perplexity_file(model, text_file, ctx_size, chunks, batch_size, threads, kl_divergence_base, kl_divergence)


@cli.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-p", "--n-prompt", default=512, show_default=True, type=int)
@click.option("-n", "--n-gen", default=128, show_default=True, type=int)
@click.option("-b", "--batch-size", default=512, show_default=True, type=int)
@click.option("-r", "--repetitions", default=5, show_default=True, type=int)
@click.option("-t", "--threads", type=int)
@click.option("-o", "--output", default="md", show_default=True, type=click.Choice(["md", "json"]))
def bench_cmd(model, n_prompt, n_gen, batch_size, repetitions, threads, output) -> None:
    """Prompt (pp) and generation (tg) tokens/s of MODEL, like llama-bench."""
    from runtime.bench import bench

    bench(model, n_prompt, n_gen, repetitions, threads, batch_size, output, out=sys.stdout)


@cli.command("convert")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("-o", "--outfile", "out", required=True, type=click.Path(dir_okay=False), help="Output GGUF file.")
@click.option("--outtype", default="auto", show_default=True, type=click.Choice(["f32", "f16", "bf16", "q8_0", "auto"]))
def convert_cmd(model_dir, out, outtype) -> None:
    """Convert a HF checkpoint (DeciLM / Llama, safetensors) to GGUF like convert_hf_to_gguf.py."""
    from ggufkit.convert import convert

    click.echo(str(convert(model_dir, out, outtype, progress=True)))


@cli.command("info")
@click.argument("path", metavar="FILE.gguf", type=click.Path(dir_okay=False))
def info_cmd(path) -> None:
    """Print a GGUF's metadata, tensor table, size and bits per weight (and DeciLM's layers)."""
    from ggufkit.info import format_info, gguf_info

    click.echo(format_info(gguf_info(path)))


@cli.command("warmup")
@click.argument("what", metavar="[TYPES|MODEL]", required=False)
@click.option("--force", is_flag=True, help="Compile again even if the kernels are cached.")
def warmup_cmd(what, force) -> None:
    """Compile the CPU kernels ahead of time (for container images): for a GGUF's weight types,
    a comma-separated list of ggml types (Q4_K,Q6_K), or every type when none is given."""
    import os
    import time

    from runtime.kernels import warm

    t0 = time.perf_counter()
    if what and os.path.isfile(what):
        from runtime.loader import load   # loading compiles what the model needs (with the notice)
        types = sorted({t.qtype for t in load(what, with_tokenizer=False).w.mats.values()})
    else:
        types = [t.strip().upper() for t in what.split(",")] if what else list(warm.kernel_types())
        bad = [t for t in types if t not in warm.kernel_types() and t != "F32"]
        if bad:
            raise GGUFKitError(f"no CPU kernels for type(s) {', '.join(bad)} (known: {', '.join(warm.kernel_types())})")
    names = [warm.COMMON] + [t for t in types if t in warm.kernel_types()] if force else warm.needs_compile(types)
    warm.warm(names, on_each=lambda n, s: click.echo(f"compiled {n} in {s:.1f} s", err=True))
    click.echo(f"kernels ready for {', '.join(types)} ({time.perf_counter() - t0:.1f} s)")


def _print_notice(msg: str) -> None:
    click.echo(msg, err=True)


def _route_notices() -> None:
    from runtime import notices   # cheap: no numpy/Numba
    notices.set_handler(_print_notice)


_route_notices()


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
