"""Perplexity of the emulated CUDA backend vs the CPU backend on the tiny models of
tests/runtime/cuda/test_cuda_model.py (the numbers docs/CUDA.md quotes).

    python -m tools.conformance.compare_cuda_emu                 # sets GGUFKIT_CUDA_EMULATE=1 itself
    python -m tools.conformance.compare_cuda_emu --sensitivity   # CPU only: the CPU backend against itself
                                                     # with one op computed in another valid way

    python -m tools.conformance.compare_cuda_emu --numerics exact   # the CPU's numerics instead of the default (fast)
    python -m tools.conformance.compare_cuda_emu --ops [--replace attention,rms_norm] [--only deci-iq]
        # per op of the emulated CUDA run: the largest difference from the CPU backend's result on the
        # same inputs; --replace continues with the CPU's result for those ops (finds which
        # ops move the perplexity); matmul:QTYPE or matmul:TENSOR (e.g. matmul:IQ2_XXS,
        # matmul:output.weight) replaces only those matmuls; [--how all|part] one placement

--sensitivity shows how far a last-bit difference moves these models' perplexity: the CPU
backend with attention in float32 (float32 BLAS and softmax, as the CPU backend did before it
computed attention in float64) or rms_norm with a float32 sum of squares (as ggml-cuda), or its
prefill matmuls with f16 operands (the default CUDA numerics' prefill GEMM), each otherwise
identical. [--chunks N] scores more text (default: the tests' 2 chunks of 32), in
every mode.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ["GGUFKIT_CUDA_EMULATE"] = "1"
REPO = Path(__file__).resolve().parents[2]


def _specs():
    from tests.helpers import tiny_models as T
    return {"deci-f16": ("deci", T.DECI_BLOCKS, "F16"), "deci-iq": ("deci", T.DECI_BLOCKS, T.iq_mix),
            "deci-q4km": ("deci", T.DECI_BLOCKS, "Q4_K_M"), "llama-f16": ("llama", T.LLAMA_BLOCKS, "F16"),
            "gemma3-f16": ("gemma3", T.GEMMA3_BLOCKS, "F16")}


def attention_f32(q, k_cache, v_cache, n_past, scale, window=None, softcap=None):
    """Causal GQA attention in float32 (float32 BLAS, float32 softmax)."""
    import numpy as np
    n_tok, n_head, hd = q.shape
    n_kv = k_cache.shape[1]
    group, n_keys = n_head // n_kv, n_past + n_tok
    qpos, kpos = n_past + np.arange(n_tok)[:, None], np.arange(n_keys)[None, :]
    masked = kpos > qpos
    if window is not None:
        masked |= (qpos - kpos) >= window
    out = np.empty(q.shape, np.float32)
    for g in range(n_kv):
        k = np.asarray(k_cache[:n_keys, g, :], dtype=np.float32)
        v = np.asarray(v_cache[:n_keys, g, :], dtype=np.float32)
        qg = q[:, g * group:(g + 1) * group, :]
        s = (qg.reshape(n_tok * group, hd) @ k.T).reshape(n_tok, group, n_keys) * np.float32(scale)
        if softcap:
            s = np.float32(softcap) * np.tanh(s / np.float32(softcap))
        s[np.broadcast_to(masked[:, None, :], s.shape)] = -np.inf
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        out[:, g * group:(g + 1) * group, :] = (s.reshape(n_tok * group, n_keys) @ v).reshape(n_tok, group, -1)
    return out


def _rms_norm_f32sum(x, w, eps):
    """rms_norm with the squares summed in float32 (pairwise, numpy)."""
    import numpy as np
    x = np.asarray(x, np.float32)
    mean = (x * x).sum(axis=-1, dtype=np.float32) / np.float32(x.shape[-1])
    y = x * (np.float32(1.0) / np.sqrt(mean + np.float32(eps)))[..., None]
    return (y * w if w is not None else y).astype(np.float32)


def sensitivity(chunks: int) -> None:
    from runtime.backend import CPU, CPUBackend
    from runtime.loader import load
    from runtime.perplexity import perplexity, read_text_file
    from tests.helpers import tiny_models as T
    from tests.helpers.tiny_models import N_CTX, TEXT

    class Attn32(CPUBackend):
        def attention(self, q, k, v, n_past, scale, window=None, softcap=None):
            return attention_f32(q, k, v, n_past, scale, window, softcap)

    class Norm32(CPUBackend):
        def rms_norm(self, x, w, eps):
            return _rms_norm_f32sum(x, w, eps)

    class GemmF16(CPUBackend):
        """The default CUDA numerics' prefill math on the CPU: x as the CPU converts it and the
        dequantized weight, both rounded to f16, multiplied exactly (float64) and rounded once."""
        def matmul(self, w, x):
            import numpy as np
            from quant.api import dequantize
            from runtime.reference import activations_as_seen
            x2 = np.atleast_2d(np.asarray(x, np.float32))
            if x2.shape[0] <= 8 or w.qtype in ("F32", "BF16"):
                return super().matmul(w, x)
            xa = (x2.astype(np.float16) if w.qtype == "F16" else
                  activations_as_seen(x2, w.qtype).astype(np.float32).astype(np.float16))
            wd = np.asarray(dequantize(w.data, w.qtype, backend="numpy"), np.float32).reshape(w.shape)
            return (xa.astype(np.float64) @ wd.astype(np.float16).astype(np.float64).T).astype(np.float32)

    text = read_text_file(TEXT)
    d = Path(tempfile.mkdtemp())
    print(f"n_ctx {N_CTX}, {chunks} chunks ({chunks * (N_CTX // 2 - 1)} scored tokens)\n")
    print("| model | PPL CPU | float32 attention | relative | float32 rms_norm sum | relative "
          "| f16 GEMM operands | relative |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (arch, blocks, types) in _specs().items():
        path = d / f"{name}.gguf"
        T.write_tiny(path, arch, blocks, types)
        m = load(str(path))
        ppl = []
        for be in (CPU, Attn32(), Norm32(), GemmF16()):
            m.place([be] * m.hp.n_layer, be)
            ppl.append(perplexity(m, text, N_CTX, chunks).ppl)
        print(f"| {name} | {ppl[0]:.4f} | {ppl[1]:.4f} | {abs(ppl[1] / ppl[0] - 1):.1e} | {ppl[2]:.4f} | "
              f"{abs(ppl[2] / ppl[0] - 1):.1e} | {ppl[3]:.4f} | {abs(ppl[3] / ppl[0] - 1):.1e} |", flush=True)


VERBS = ("matmul", "get_rows", "rms_norm", "rope", "attention", "swiglu", "geglu", "add", "scale", "softcap")


def _ops_probe(replace: set, log: dict):
    """Wrap CUDABackend's verbs: each result is compared with the CPU backend's on the same
    inputs (emulated device arrays are host arrays); ``replace``: return the CPU's instead."""
    import numpy as np
    from runtime.cuda.backend import CUDABackend
    from runtime.backend import CPU

    def wrap(verb, f):
        def g(self, *a, **kw):
            out = f(self, *a, **kw)
            ref = getattr(CPU, verb)(*[x.copy() if isinstance(x, np.ndarray) else x for x in a], **kw)
            tag = verb + (f" {a[0].name} {a[0].qtype}" if verb in ("matmul", "get_rows") else "")
            o, r = np.asarray(out, np.float64), np.asarray(ref, np.float64)
            log[tag] = max(log.get(tag, 0.0), float(np.abs(o - r).max() / max(np.abs(r).max(), 1e-30)))
            hit = verb in replace or (verb in ("matmul", "get_rows") and any(
                r.startswith(verb + ":") and r.split(":", 1)[1] in (a[0].qtype, a[0].name) for r in replace))
            return np.ascontiguousarray(ref, np.float32) if hit else out
        return g
    for verb in VERBS:
        setattr(CUDABackend, verb, wrap(verb, getattr(CUDABackend, verb)))


def main() -> None:
    log: dict = {}
    ops_mode = "--ops" in sys.argv
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if ops_mode:
        rep = set(sys.argv[sys.argv.index("--replace") + 1].split(",")) if "--replace" in sys.argv else set()
        _ops_probe(rep, log)
    if "--numerics" in sys.argv:
        from runtime.cuda import qmatmul
        qmatmul.DEFAULT_NUMERICS = sys.argv[sys.argv.index("--numerics") + 1]   # what CUDABackend() takes
    if "--sensitivity" in sys.argv:
        chunks = int(sys.argv[sys.argv.index("--chunks") + 1]) if "--chunks" in sys.argv else 2
        return sensitivity(chunks)
    from runtime.device import DeviceOptions
    from runtime.loader import load
    from runtime.perplexity import perplexity, read_text_file
    from runtime.plan import apply_plan, place_model, plan_header
    from tests.helpers import tiny_models as T
    from tests.helpers.tiny_models import CASES, CHUNKS, N_CTX, TEXT

    text = read_text_file(TEXT)
    if "--chunks" in sys.argv:
        CHUNKS = int(sys.argv[sys.argv.index("--chunks") + 1])
    d = Path(tempfile.mkdtemp())
    specs = _specs()
    print("| model | placement | PPL CPU | PPL CUDA (emulated) | relative |\n|---|---|---:|---:|---:|")
    for name, how in CASES:
        if only and name != only or "--how" in sys.argv and how != sys.argv[sys.argv.index("--how") + 1]:
            continue
        log.clear()
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
        if ops_mode:
            worst = sorted(log.items(), key=lambda kv: -kv[1])
            print("|  | ops (largest relative difference from the CPU's result) | "
                  + ", ".join(f"{k} {v:.1e}" for k, v in worst if v > 0) + (" (none differ)" if not worst or
                                                                           worst[0][1] == 0 else "") + " | | |")


if __name__ == "__main__":
    main()
