"""``ggufkit plan``: a placement (runtime.plan.Plan) as a table or JSON."""
from __future__ import annotations

import json

from quant.units import SIZE_HELP, fmt_bytes
from runtime.plan import Plan


def format_plan(p: Plan, output: str = "text") -> str:
    if output == "json":
        return json.dumps(p.to_dict(), indent=2) + "\n"
    budget = fmt_bytes(p.budget) if len(p.devices) == 1 else \
        " + ".join(f"{fmt_bytes(b)} ({d})" for d, b in zip(p.devices, p.budgets))
    split = f", tensor split {','.join(f'{v:g}' for v in p.tensor_split)}" if p.tensor_split else ""
    rows = [f"plan: {p.arch}, {len(p.layers)} layers, n_ctx {p.n_ctx}, GPU budget {budget}, "
            f"gpu-layers {p.gpu_layers}{split}",
            f"{'layer':>5}  {'kind':<26} {'weights':>11} {'kv cache':>11}  device"]
    for lc in p.layers:
        rows.append(f"{lc.il:>5}  {lc.kind:<26} {fmt_bytes(lc.weight_bytes):>11} {fmt_bytes(lc.kv_bytes):>11}  "
                    f"{p.layer_device(lc.il)}")
    rows.append(f"{'embd':>5}  {'token_embd':<26} {fmt_bytes(p.embd_bytes):>11} {'':>11}  cpu")
    head = "output" + (" (tied: token_embd copy)" if p.tied_output and p.output_on_gpu else "")
    rows.append(f"{'out':>5}  {head:<26} {fmt_bytes(p.output_bytes):>11} {'':>11}  {p.output_device}")
    if p.other_bytes:
        rows.append(f"{'':>5}  {'other (rope_freqs ...)':<26} {fmt_bytes(p.other_bytes):>11} {'':>11}  cpu")
    rows.append("")
    for d, t in p.totals().items():
        parts = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in t.items() if k != "total" and v)
        rows.append(f"{d:>7}: {fmt_bytes(t['total'])}" + (f" ({parts})" if parts else ""))
    rows.append(f"n_gpu_layers {p.n_gpu_layers} (llama.cpp count: layers + output), "
                f"{p.crossings()} device crossings per token")
    rows.append(f"predicted decode: {p.tok_s:.2f} tok/s (all on CPU: {p.cpu_only_tok_s:.2f}) "
                f"from CPU {p.cpu_bw / 1e9:.0f} GB/s, GPU {p.gpu_bw / 1e9:.0f} GB/s")
    rows.extend(f"note: {n}" for n in p.notes)
    return "\n".join(rows) + "\n"


def device_options(f):
    """--device, --gpu-layers, --gpu-memory, --tensor-split, --numerics on a command; it receives ``dev``
    (DeviceOptions)."""
    import functools

    import click

    from runtime.device import NUMERICS_OPTIONS, DeviceOptions

    @click.option("--device", default="cpu", show_default=True,
                  help="cpu, cuda, cuda:N, or several GPUs cuda:0,cuda:1 (layers split over them).")
    @click.option("--gpu-layers", "-ngl", default="auto", show_default=True,
                  help="Layers on the GPU: N (the last N, as llama.cpp's -ngl), all, or auto (fastest that fits).")
    @click.option("--gpu-memory", help=f"GPU memory budget in {SIZE_HELP}, or one per GPU: 16GiB,16GiB "
                                       f"(default: free VRAM less 512 MiB).")
    @click.option("--tensor-split", "-ts", help="Several GPUs: the share of the GPU layers each gets, in order, "
                                                "as llama.cpp's -ts (3,1: three quarters on the first; "
                                                "default: by free memory).")
    @click.option("--numerics", type=click.Choice(NUMERICS_OPTIONS),
                  help="GPU layers' arithmetic. fast (default): no FP64, f16 tensor-core prefill GEMM, float "
                       "attention and silu, as ggml-cuda; exact: the CPU's results (f32 GEMM, FP64 attention and "
                       "silu: slow on consumer cards), to check a GPU against the CPU. The CPU runs exact.")
    @functools.wraps(f)
    def wrapper(*args, device, gpu_layers, gpu_memory, tensor_split, numerics, **kw):
        return f(*args, dev=DeviceOptions(device, gpu_layers, gpu_memory, numerics, tensor_split), **kw)
    return wrapper
