"""Perplexity of the emulated CUDA backend vs the CPU backend on the tiny models of
tests/test_cuda_model.py (the numbers docs/CUDA.md quotes).

    python tools/compare_cuda_emu.py            # sets GGUFKIT_CUDA_EMULATE=1 itself
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ["GGUFKIT_CUDA_EMULATE"] = "1"
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    from runtime.device import DeviceOptions
    from runtime.loader import load
    from runtime.perplexity import perplexity, read_text_file
    from runtime.plan import apply_plan, place_model, plan_header
    from tests import tiny_models as T
    from tests.test_cuda_model import CASES, CHUNKS, N_CTX, TEXT

    text = read_text_file(TEXT)
    d = Path(tempfile.mkdtemp())
    specs = {"deci-f16": ("deci", T.DECI_BLOCKS, "F16"), "deci-iq": ("deci", T.DECI_BLOCKS, T.iq_mix),
             "deci-q4km": ("deci", T.DECI_BLOCKS, "Q4_K_M"), "llama-f16": ("llama", T.LLAMA_BLOCKS, "F16"),
             "gemma3-f16": ("gemma3", T.GEMMA3_BLOCKS, "F16")}
    print("| model | placement | PPL CPU | PPL CUDA (emulated) | relative |\n|---|---|---:|---:|---:|")
    for name, how in CASES:
        arch, blocks, types = specs[name]
        path = d / f"{name}.gguf"
        if not path.exists():
            T.write_tiny(path, arch, blocks, types)
        m = load(str(path))
        cpu = perplexity(m, text, N_CTX, CHUNKS).ppl
        if how == "all":
            place_model(m, DeviceOptions("cuda", "all"), N_CTX)
        else:
            p = plan_header(m.gguf.fields, m.gguf.tensors, N_CTX, 1 << 40, "all")
            budget = p.context_bytes + p.scratch + sum(lc.gpu_bytes for lc in p.layers) // 2
            apply_plan(m, plan_header(m.gguf.fields, m.gguf.tensors, N_CTX, budget, "auto", t_cross=0.0))
        gpu = perplexity(m, text, N_CTX, CHUNKS).ppl
        where = "all" if how == "all" else "".join("G" if g else "c" for g in m.plan.on_gpu)
        print(f"| {name} | {where} | {cpu:.4f} | {gpu:.4f} | {abs(gpu / cpu - 1):.1e} |", flush=True)


if __name__ == "__main__":
    main()
