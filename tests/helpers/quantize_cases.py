"""A tiny deterministic llama GGUF and the llama-quantize cases run on it.

Shared by tests/ggufkit/test_quantize_file.py and tools/golden/gen_quantize_golden.py, which records the
sha256 of llama-quantize's output for every case in tests/golden/quantize/hashes.json.

The GGUF is written here byte by byte (no gguf-py), so it is the same on every machine: the
tensor names and row lengths of the llama-tiny fixture (so llama-tiny's imatrix from
llama-imatrix applies), with few rows per weight to keep it small (~0.5 MB F16).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from tests.helpers import GOLDENS

GOLDEN_DIR = GOLDENS / "quantize"
IMATRIX_GGUF = "llama-tiny.imatrix.gguf"   # relative paths: the path is written into the output
IMATRIX_DAT = "llama-tiny.imatrix.dat"

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, VOCAB = 256, 4, 4, 2, 768, 64
ROWS = 32


def _s(b: str) -> bytes:
    e = b.encode()
    return struct.pack("<Q", len(e)) + e


def tiny_tensors(seed: int = 0, n_expert: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, array) with numpy shape = reversed ggml ne; F32 for norms, F16 for weights.

    With ``n_expert`` the FFN is a mixture of experts: ``ffn_{gate,up,down}_exps`` [ne0, rows,
    n_expert] and the router ``ffn_gate_inp`` (F32, never quantized)."""
    rng = np.random.default_rng(seed)
    w = lambda rows, cols: (rng.standard_normal((rows, cols)) * 0.02).astype(np.float16)  # noqa: E731
    T = [("token_embd.weight", w(VOCAB, N_EMBD))]
    for i in range(N_LAYER):
        if n_expert:
            e = lambda rows, cols: (rng.standard_normal((n_expert, rows, cols)) * 0.02).astype(np.float16)  # noqa: E731
            T += [
                (f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, np.float32)),
                (f"blk.{i}.attn_q.weight", w(ROWS, N_EMBD)),
                (f"blk.{i}.attn_k.weight", w(ROWS // 2, N_EMBD)),
                (f"blk.{i}.attn_v.weight", w(ROWS // 2, N_EMBD)),
                (f"blk.{i}.attn_output.weight", w(ROWS, N_EMBD)),
                (f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, np.float32)),
                (f"blk.{i}.ffn_gate_inp.weight", (rng.standard_normal((n_expert, N_EMBD)) * 0.02).astype(np.float32)),
                (f"blk.{i}.ffn_gate_exps.weight", e(8, N_EMBD)),
                (f"blk.{i}.ffn_up_exps.weight", e(8, N_EMBD)),
                (f"blk.{i}.ffn_down_exps.weight", e(4, N_FF)),
            ]
            continue
        T += [
            (f"blk.{i}.attn_norm.weight", (1 + 0.05 * rng.standard_normal(N_EMBD)).astype(np.float32)),
            (f"blk.{i}.attn_q.weight", w(ROWS, N_EMBD)),
            (f"blk.{i}.attn_k.weight", w(ROWS // 2, N_EMBD)),
            (f"blk.{i}.attn_v.weight", w(ROWS // 2, N_EMBD)),
            (f"blk.{i}.attn_output.weight", w(ROWS, N_EMBD)),
            (f"blk.{i}.ffn_norm.weight", (1 + 0.05 * rng.standard_normal(N_EMBD)).astype(np.float32)),
            (f"blk.{i}.ffn_gate.weight", w(ROWS, N_EMBD)),
            (f"blk.{i}.ffn_up.weight", w(ROWS, N_EMBD)),
            (f"blk.{i}.ffn_down.weight", w(ROWS // 2, N_FF)),
        ]
    if not n_expert:
        T[2][1][0, :] = 0                  # an all-zero row
        T[3][1][1, 7] = 3.0                # one outlier
    T += [("output_norm.weight", np.ones(N_EMBD, np.float32)), ("output.weight", w(VOCAB, N_EMBD))]
    return T


def write_tiny_gguf(path: str | Path, seed: int = 0, n_expert: int = 0) -> Path:
    """GGUF v3, llama architecture, general.file_type 1 (F16), alignment 32."""
    moe = [(_s("llama.expert_count"), 4, struct.pack("<I", n_expert)),
           (_s("llama.expert_used_count"), 4, struct.pack("<I", 2))] if n_expert else []
    kv = moe + [
        (_s("general.architecture"), 8, _s("llama")),
        (_s("general.name"), 8, _s("ggufkit quantize golden")),
        (_s("llama.block_count"), 4, struct.pack("<I", N_LAYER)),
        (_s("llama.context_length"), 4, struct.pack("<I", 4096)),
        (_s("llama.embedding_length"), 4, struct.pack("<I", N_EMBD)),
        (_s("llama.feed_forward_length"), 4, struct.pack("<I", N_FF)),
        (_s("llama.attention.head_count"), 4, struct.pack("<I", N_HEAD)),
        (_s("llama.attention.head_count_kv"), 4, struct.pack("<I", N_HEAD_KV)),
        (_s("llama.rope.freq_base"), 6, struct.pack("<f", 500000.0)),
        (_s("llama.attention.layer_norm_rms_epsilon"), 6, struct.pack("<f", 1e-5)),
        (_s("llama.vocab_size"), 4, struct.pack("<I", VOCAB)),
        (_s("llama.rope.dimension_count"), 4, struct.pack("<I", N_EMBD // N_HEAD)),
        (_s("general.file_type"), 4, struct.pack("<I", 1)),
        (_s("general.quantization_version"), 4, struct.pack("<I", 2)),
    ]
    tensors = tiny_tensors(seed, n_expert)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    body = b"".join(k + struct.pack("<I", t) + v for k, t, v in kv)
    infos, blobs, off = [], [], 0
    for name, a in tensors:
        ne = a.shape[::-1]
        typ = 0 if a.dtype == np.float32 else 1
        infos.append(_s(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}q", *ne)
                     + struct.pack("<IQ", typ, off))
        b = a.tobytes()
        b += b"\0" * (-len(b) % 32)
        blobs.append(b)
        off += len(b)
    meta = head + body + b"".join(infos)
    meta += b"\0" * (-len(meta) % 32)
    path = Path(path)
    path.write_bytes(meta + b"".join(blobs))
    return path


# --- the cases: name -> (llama-quantize options, file type) -------------------------------------

ALIASES = {"Q3_K", "Q4_K", "Q5_K"}


def cases() -> dict[str, tuple[list[str], str]]:
    from quant.recipes import QUANT_OPTIONS

    out = {}
    for name, _, _ in QUANT_OPTIONS:
        if name in ALIASES:
            continue
        out[f"{name}/plain"] = ([], name)
        out[f"{name}/pure"] = (["--pure"], name)
        out[f"{name}/imatrix"] = (["--imatrix", IMATRIX_GGUF], name)
    for name in ("Q4_K_M", "IQ2_XS", "Q4_0", "IQ4_XS"):
        out[f"{name}/imatrix-dat"] = (["--imatrix", IMATRIX_DAT], name)
    out["Q4_K_M/tensor-type"] = (["--tensor-type", "attn_v=q8_0", "--tensor-type",
                                  r"blk\.[12]\.ffn_down=iq4_nl", "--tensor-type", "ffn_up=f16"], "Q4_K_M")
    out["Q3_K_M/output-embd-types"] = (["--output-tensor-type", "q4_0",
                                        "--token-embedding-type", "q5_1"], "Q3_K_M")
    out["Q5_K_S/leave-output"] = (["--leave-output-tensor"], "Q5_K_S")
    out["IQ3_M/include-weights"] = (["--imatrix", IMATRIX_GGUF, "--include-weights", "ffn"], "IQ3_M")
    out["IQ4_NL/exclude-weights"] = (["--imatrix", IMATRIX_GGUF, "--exclude-weights", "attn_"], "IQ4_NL")
    return out


N_EXPERT = 4
MOE_IMATRIX = "moe.imatrix.gguf"


def write_moe_imatrix(path: str | Path) -> Path:
    """A synthetic GGUF imatrix for the MoE model: per-expert sums and counts, one count 0."""
    from quant.imatrix import save_imatrix_gguf

    rng = np.random.default_rng(1)
    sums, counts = {}, {}
    for name, a in tiny_tensors(0, N_EXPERT):
        if a.ndim < 2 or "norm" in name or "gate_inp" in name or "token_embd" in name:
            continue
        n_mat = a.shape[0] if a.ndim == 3 else 1
        sums[name] = rng.uniform(0.5, 20, (n_mat, a.shape[-1])).astype(np.float32)
        counts[name] = rng.integers(1, 9, n_mat).astype(np.float32)
        if n_mat > 1 and name.startswith("blk.1."):
            counts[name][2] = 0                       # an expert never routed: weights 1.0
    save_imatrix_gguf(path, sums, counts, datasets=["synthetic"], chunk_count=4, chunk_size=128)
    return Path(path)


def moe_cases() -> dict[str, tuple[list[str], str]]:
    return {
        "moe/MXFP4_MOE/plain": ([], "MXFP4_MOE"),
        "moe/Q4_K_M/plain": ([], "Q4_K_M"),
        "moe/Q3_K_M/plain": ([], "Q3_K_M"),
        "moe/IQ3_XS/plain": ([], "IQ3_XS"),
        "moe/Q4_K_M/imatrix": (["--imatrix", MOE_IMATRIX], "Q4_K_M"),
        "moe/IQ2_XS/imatrix": (["--imatrix", MOE_IMATRIX], "IQ2_XS"),
        "moe/IQ4_XS/imatrix": (["--imatrix", MOE_IMATRIX], "IQ4_XS"),
    }


def to_kwargs(opts: list[str]) -> dict:
    """llama-quantize options -> ggufkit.quantize.quantize_file keyword arguments."""
    kw: dict = {}
    it = iter(opts)
    for a in it:
        key = a.lstrip("-").replace("-", "_")
        if a in ("--pure", "--leave-output-tensor", "--allow-requantize"):
            kw[key] = True
        elif a == "--tensor-type":
            kw.setdefault("tensor_types", []).append(next(it))
        elif a in ("--include-weights", "--exclude-weights"):
            kw.setdefault(key, []).append(next(it))
        else:
            kw[key] = next(it)
    return kw


def tiny_mix(src: Path) -> dict:
    """A budgeted-allocation mix for the tiny llama: every quantizable tensor a different candidate
    type, cycling through ggufkit.measure.DEFAULT_CANDIDATES (tests/golden/alloc/mix.txt)."""
    from ggufkit.measure import DEFAULT_CANDIDATES, candidate_types
    from ggufkit.quantize import open_source
    from quant.imatrix import load_imatrix
    im = load_imatrix(GOLDEN_DIR / IMATRIX_GGUF)
    s = open_source(src)
    types, k = {}, 0
    for p in s.plans():
        if p.dst_type == p.src_type:
            continue
        c = candidate_types(p.shape[0], p.name in im.entries, DEFAULT_CANDIDATES)
        types[p.name] = c[k % len(c)]
        k += 1
    return types
