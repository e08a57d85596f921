"""The ``ggufkit`` command line: each command parses options and calls one library function."""
from __future__ import annotations

import sys

import click

from ggufkit.atomic import Terminated, handle_signals, ignore_late_sigterm, restore_signals
from ggufkit.errors import GGUFKitError
from ggufkit.plan import device_options
from quant.errors import QuantError
from quant.units import SIZE_HELP
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
              type=click.Choice(["deci-tiny", "llama-tiny", "qwen2-tiny", "qwen3-tiny", "super49b-4layer"]))
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
@click.option("--target-bpw", type=float, help="Budgeted allocation: bits per weight of the whole file.")
@click.option("--target-size", help=f"Budgeted allocation: file size in {SIZE_HELP}.")
@click.option("--candidates", help="Budgeted allocation: comma-separated candidate types.")
@click.option("--calib-file", type=click.Path(dir_okay=False), help="Budgeted allocation: calibration text.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Budgeted allocation: measurement cache (default $GGUFKIT_CACHE/measure or ~/.cache/ggufkit/measure).")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Budgeted allocation: local processes measuring (without --ray).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", metavar="[ADDRESS]",
              help="Budgeted allocation: measure as Ray tasks, on a new local Ray or the cluster at ADDRESS "
                   "(the [ray] extra; give it last or as --ray=ADDRESS).")
def quantize(inp, args, tensor_type_file, dry_run, target_bpw, target_size, candidates, calib_file, cache_dir, workers,
             ray_address, **opts) -> None:
    """Quantize a GGUF like llama-quantize: IN.gguf [OUT.gguf] TYPE [NTHREADS]."""
    from ggufkit.quantize import parse_positional, quantize_file, read_tensor_type_file

    if target_bpw is not None or target_size is not None:
        from ggufkit.commands.quantize import budget_cmd
        budget_cmd(inp, args, target_bpw, target_size, candidates, calib_file, opts, cache_dir=cache_dir,
                   workers=workers, ray_address=ray_address)
        return
    if ray_address is not None or cache_dir is not None:
        raise GGUFKitError("--ray and --cache-dir belong to budgeted allocation (--target-bpw/--target-size)")
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
@click.option("-n", "--n-predict", default=128, show_default=True, type=int,
              help="Tokens to generate; -1: until end of text or the context is full.")
@click.option("-c", "--ctx-size", type=int, help="Context size (default: prompt + n).")
@click.option("--temp", default=0.8, show_default=True, type=float, help="Temperature; 0 is greedy.")
@click.option("--top-k", default=40, show_default=True, type=int)
@click.option("--top-p", default=0.95, show_default=True, type=float)
@click.option("--min-p", default=0.05, show_default=True, type=float)
@click.option("--repeat-penalty", default=1.0, show_default=True, type=float)
@click.option("--seed", type=int, help="RNG seed (default: random).")
@click.option("-t", "--threads", type=int, help="Threads (default: all).")
@device_options
def run_cmd(model, prompt, n_predict, ctx_size, temp, top_k, top_p, min_p, repeat_penalty, seed, threads, dev) -> None:
    """Generate text from MODEL (a GGUF of any architecture in docs/COMPATIBILITY.md), streamed to stdout."""
    from ggufkit.commands.run import check_n_predict, run
    from runtime.generate import SamplingParams

    check_n_predict(n_predict)
    params = SamplingParams(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed)
    run(model, prompt, n_predict, params, threads, ctx_size, err=sys.stderr, dev=dev)


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
@device_options
def chat_cmd(model, system, reasoning, json_mode, tools_file, temp, top_p, max_tokens, ctx_size, seed, threads, dev) -> None:
    """Chat with MODEL using its chat template: one message per stdin line."""
    from ggufkit.commands.chat import chat_loop
    from runtime.generate import SamplingParams

    chat_loop(model, system, reasoning, json_mode, threads, SamplingParams(temp=temp, top_p=top_p, seed=seed),
              ctx_size, max_tokens, tools_file, dev=dev)


@cli.command("serve")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (127.0.0.1: this machine only).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("-c", "--ctx-size", default=4096, show_default=True, type=click.IntRange(2),
              help="Total context, split evenly between the slots.")
@click.option("-np", "--parallel", default=1, show_default=True, type=click.IntRange(1, 256), help="Slots.")
@click.option("--queue-size", default=64, show_default=True, type=click.IntRange(0),
              help="Requests that may wait for a slot; beyond it: 429.")
@click.option("--prefill-chunk", default=256, show_default=True, type=click.IntRange(1),
              help="Prompt tokens evaluated per slot per step.")
@click.option("--alias", help="Model id reported by /v1/models (default: the file name).")
@click.option("--chat-template",
              help="A built-in (chatml, gemma) or a Jinja file; default: the GGUF's, else by architecture.")
@click.option("--api-key", envvar="GGUFKIT_API_KEY", help="Require Authorization: Bearer KEY (or $GGUFKIT_API_KEY).")
@click.option("-t", "--threads", type=int)
@click.option("--ray", "use_ray", is_flag=True,
              help="Serve through Ray Serve (the [ray] extra): --replicas copies of the model behind one endpoint.")
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1), help="Ray Serve replicas (with --ray).")
@device_options
def serve_cmd(model, host, port, ctx_size, parallel, queue_size, prefill_chunk, alias, chat_template, api_key, threads,
              use_ray, replicas, dev) -> None:
    """Serve MODEL over an OpenAI-compatible HTTP API (needs the [serve] extra; docs/SERVE.md)."""
    try:
        from ggufkit.serve.app import serve
    except ImportError as e:
        raise GGUFKitError(f"serve needs the [serve] extra: pip install 'ggufkit[serve]' ({e})") from None
    if not use_ray:
        serve(model, host, port, ctx_size, parallel, threads, dev, api_key or None, queue_size, prefill_chunk, alias,
              chat_template)
        return
    from ggufkit.serve.templates import chat_template as pick_template
    from runtime.loader import load
    m = load(model, with_tokenizer=False)     # a bad file or template is one error line here, not a failed replica
    try:
        pick_template(m.gguf, m.hp.arch, chat_template)
    except ValueError as e:
        raise GGUFKitError(str(e)) from None
    del m
    try:
        from ggufkit.serve.ray_app import serve_ray
    except ImportError as e:
        raise GGUFKitError(f"serve --ray needs the [ray] extra: pip install 'ggufkit[ray]' ({e})") from None
    serve_ray(model, host, port, replicas, n_ctx=ctx_size, parallel=parallel, n_threads=threads, dev=dev,
              api_key=api_key or None, max_queue=queue_size, prefill_chunk=prefill_chunk, alias=alias,
              template=chat_template)


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
@device_options
def perplexity_cmd(model, text_file, ctx_size, chunks, batch_size, threads, kl_divergence_base, kl_divergence,
                   dev) -> None:
    """Perplexity of MODEL on a text file, exactly as llama-perplexity computes it."""
    from ggufkit.commands.perplexity import perplexity_file

    perplexity_file(model, text_file, ctx_size, chunks, batch_size, threads, kl_divergence_base, kl_divergence,
                    dev=dev)


@cli.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-p", "--n-prompt", default=512, show_default=True, type=int)
@click.option("-n", "--n-gen", default=128, show_default=True, type=int)
@click.option("-b", "--batch-size", default=512, show_default=True, type=int)
@click.option("-r", "--repetitions", default=5, show_default=True, type=int)
@click.option("-t", "--threads", type=int)
@click.option("-o", "--output", default="md", show_default=True, type=click.Choice(["md", "json"]))
@click.option("--parallel", default="1", show_default=True,
              help="Comma-separated sequence counts: one tg row each, that many sequences decoded together "
                   "(aggregate t/s, like llama-batched-bench -npl).")
@device_options
def bench_cmd(model, n_prompt, n_gen, batch_size, repetitions, threads, output, parallel, dev) -> None:
    """Prompt (pp) and generation (tg) tokens/s of MODEL, like llama-bench."""
    from ggufkit.commands.bench import format_results
    from runtime.bench import bench
    from runtime.models.base import MAX_SEQS

    if repetitions < 1:
        raise GGUFKitError(f"-r {repetitions}: at least 1 repetition is needed")
    try:
        counts = [int(p) for p in parallel.split(",")]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= c <= MAX_SEQS for c in counts):
        raise GGUFKitError(f"--parallel {parallel}: expected comma-separated counts of 1 to {MAX_SEQS} sequences")
    click.echo(format_results(bench(model, n_prompt, n_gen, repetitions, threads, batch_size, dev=dev,
                                    parallel=counts), output), nl=False)


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


@cli.command("tokenize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-p", "--prompt", help="Text to tokenize (escapes like \\n processed, as llama-tokenize).")
@click.option("-f", "--file", "text_file", type=click.Path(dir_okay=False), help="Read the text from a file.")
@click.option("--ids", "ids_only", is_flag=True, help="Print only the ids, as a Python-style list.")
@click.option("--no-bos", is_flag=True, help="Add no special tokens (llama.cpp's add_special=false).")
@click.option("--no-parse-special", is_flag=True, help="Tokenize special-token texts as plain text.")
@click.option("--no-escape", is_flag=True, help="Do not process escapes in the prompt.")
def tokenize_cmd(model, prompt, text_file, ids_only, no_bos, no_parse_special, no_escape) -> None:
    """Print MODEL's token ids (and pieces) for a text, exactly as llama-tokenize does."""
    from pathlib import Path

    from ggufkit.tokenize import format_tokens, load_vocab, tokenize_prompt

    if (prompt is None) == (text_file is None):
        raise click.UsageError("give exactly one of -p/--prompt or -f/--file")
    data = Path(text_file).read_bytes() if text_file else prompt.encode("utf-8", errors="surrogateescape")
    tok = load_vocab(model)
    ids = tokenize_prompt(tok, data, no_bos=no_bos, parse_special=not no_parse_special, escape=not no_escape)
    out = format_tokens(tok, ids, ids_only)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()


@cli.command("plan")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--gpu-memory", help=f"GPU memory budget in {SIZE_HELP} (default: the card's free memory); several "
                                   f"GPUs: one per GPU, 16GiB,16GiB.")
@click.option("-c", "--ctx-size", default=4096, show_default=True, type=int)
@click.option("--gpu-layers", "-ngl", default="auto", show_default=True, help="N (the last N, llama.cpp -ngl), all, auto.")
@click.option("--device", default="cuda:0", show_default=True, help="The GPU, or several: cuda:0,cuda:1.")
@click.option("--tensor-split", "-ts", help="Several GPUs: each one's share of the GPU layers (llama.cpp's -ts), 3,1.")
@click.option("--card", help="Plan for this card (e.g. 'RTX 3060'): its memory and bandwidth.")
@click.option("--cpu-bw", type=float, help="CPU memory bandwidth, GB/s.")
@click.option("--gpu-bw", type=float, help="GPU memory bandwidth, GB/s.")
@click.option("-b", "--batch-size", default=512, show_default=True, type=int)
@click.option("-o", "--output", default="text", show_default=True, type=click.Choice(["text", "json"]))
def plan_cmd(model, gpu_memory, ctx_size, gpu_layers, device, tensor_split, card, cpu_bw, gpu_bw, batch_size,
             output) -> None:
    """Which layers of MODEL go on the GPU: per layer kind, bytes and device; predicted tok/s."""
    from ggufkit.plan import format_plan
    from runtime.plan import plan_for_file

    p = plan_for_file(model, ctx_size, gpu_memory, gpu_layers, card=card, cpu_bw=cpu_bw, gpu_bw=gpu_bw,
                      n_batch=batch_size, device=device, tensor_split=tensor_split)
    click.echo(format_plan(p, output), nl=False)


@cli.command("imatrix")
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("-f", "--file", "text_file", type=click.Path(dir_okay=False), help="Calibration text.")
@click.option("-o", "--output", "out", default="imatrix.gguf", show_default=True, type=click.Path(dir_okay=False))
@click.option("-c", "--ctx-size", default=512, show_default=True, type=int)
@click.option("--chunks", default=-1, show_default=True, type=int, help="Max chunks (-1: all).")
@click.option("--output-format", default="gguf", show_default=True, type=click.Choice(["gguf", "dat"]))
@click.option("--in-file", "in_files", multiple=True, type=click.Path(dir_okay=False), help="Imatrix to merge (repeatable).")
@click.option("--process-output", is_flag=True, help="Also collect output.weight.")
@click.option("--no-ppl", is_flag=True, help="Do not compute perplexity.")
@click.option("--show-statistics", is_flag=True, help="Print statistics of the single --in-file.")
@click.option("-t", "--threads", type=int)
def imatrix_cmd(model, text_file, out, ctx_size, chunks, output_format, in_files, process_output, no_ppl,
                show_statistics, threads) -> None:
    """Importance matrix of MODEL on a text, like llama-imatrix (or merge / inspect --in-file)."""
    from ggufkit.imatrix import make_imatrix, show_statistics as stats

    if show_statistics:
        click.echo(stats(in_files, ctx_size))
        return
    raw, ppl = make_imatrix(model, text_file, out, ctx_size, chunks, output_format, in_files, process_output,
                            not no_ppl, progress=True, n_threads=threads)
    if ppl is not None:
        click.echo(f"Final estimate: PPL = {ppl:.4f}")
    click.echo(f"{out}: {len(raw.sums)} entries, {raw.last_chunk} chunks")


@cli.command("compare")
@click.argument("base", metavar="BASE.gguf", type=click.Path(dir_okay=False))
@click.argument("files", metavar="Q.gguf...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-f", "--file", "text_file", required=True, type=click.Path(dir_okay=False), help="Evaluation text.")
@click.option("-c", "--ctx-size", default=512, show_default=True, type=int)
@click.option("--chunks", default=-1, show_default=True, type=int, help="Max chunks (-1: all).")
@click.option("-o", "--output", "fmt", default="md", show_default=True, type=click.Choice(["md", "json", "csv"]))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Draw mean KLD vs size to this PNG.")
@click.option("--label", "labels", multiple=True, help="Label per file (default: file stem).")
@click.option("--decode-tokens", default=16, show_default=True, type=int, help="Tokens for decode t/s (0: skip).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where base logits are cached (default: beside BASE).")
@click.option("-t", "--threads", type=int)
def compare_cmd(base, files, text_file, ctx_size, chunks, fmt, plot_path, labels, decode_tokens, cache_dir,
                threads) -> None:
    """Size, PPL, KLD, Δp, same-top-p and decode speed of quantized files against BASE, in one table."""
    from ggufkit.compare import compare, format_rows, plot

    rows = compare(base, files, text_file, ctx_size, chunks, decode_tokens, cache_dir, labels or None,
                   n_threads=threads)
    click.echo(format_rows(rows, fmt))
    if plot_path:
        plot(rows, plot_path)


@cli.command("warmup")
@click.argument("what", metavar="[TYPES|MODEL]", required=False)
@click.option("--force", is_flag=True, help="Compile again even if the kernels are cached.")
def warmup_cmd(what, force) -> None:
    """Compile the CPU kernels ahead of time (for container images): for a GGUF's weight types
    (and its decode layer programs), a comma-separated list of ggml types (Q4_K,Q6_K), or every
    type when none is given."""
    import os
    import time

    from runtime.kernels import warm

    t0 = time.perf_counter()
    if what and os.path.isfile(what):
        from runtime.loader import load   # loading compiles what the model needs (with the notice)
        model = load(what, with_tokenizer=False)
        types = sorted({t.qtype for t in model.w.mats.values()})
        if model.decode_step(model.new_cache(1), 1) is not None:      # and its decode layer programs
            from runtime.generate import decode_one
            decode_one(model, model.new_cache(1), 0)
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
    """Console entry point: user errors become one line on stderr and exit status 1;
    Ctrl-C exits 130 and SIGTERM 143, both after removing any partial output. Called with
    ``argv`` (in-process use) it restores the previous signal handlers on return."""
    old = handle_signals()      # before any output exists (python -m ggufkit: before the imports too)
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as e:        # usage errors: one line too, exit 2
        msg = " ".join(e.format_message().split())
        hint = f" (see: ggufkit {e.ctx.info_name} --help)" if getattr(e, "ctx", None) is not None else ""
        click.echo(f"error: {msg}{hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("terminated", err=True)
        sys.exit(143)
    except USER_ERRORS as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        click.echo(f"error: {msg}", err=True)
        sys.exit(1)
    finally:
        if argv is None:            # the program itself (console script, python -m ggufkit)
            ignore_late_sigterm()
        else:
            restore_signals(old)


if __name__ == "__main__":
    main()
