"""Random quantized weights for kernel tests and benchmarks: random packed bytes with their fp16
scale fields set to sane finite values, so every bit of every block layout is exercised.

random_qtensor  a runtime QTensor (the CPU kernel tests, tools/bench/bench_kernels.py)
random_rows     u8[n_rows, row_bytes] (the CUDA kernel tests, tools/conformance/cuda_quant_check.py)"""
from __future__ import annotations

import numpy as np

from quant.types import TYPES, get_type
from runtime.qtensor import QTensor

# byte offsets of fp16 scale fields inside one block (ggml-common.h)
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0], "TQ2_0": [64],
    "IQ2_XXS": [0], "IQ2_XS": [0], "IQ2_S": [0], "IQ3_XXS": [0], "IQ3_S": [0], "IQ1_S": [0],
    "TQ1_0": [52], "Q1_0": [0], "Q2_0": [0],
}


def random_qtensor(qtype: str, n_out: int, n_in: int, seed: int = 0) -> QTensor:
    rng = np.random.default_rng(seed)
    if qtype in ("F32", "F16", "BF16"):
        return QTensor.from_float(rng.standard_normal((n_out, n_in)).astype(np.float32), qtype) \
            if qtype != "BF16" else _bf16(rng.standard_normal((n_out, n_in)).astype(np.float32))
    block, size = get_type(qtype).block_size, get_type(qtype).type_size
    nb = n_in // block
    raw = rng.integers(0, 256, size=(n_out, nb, size), dtype=np.uint8)
    if qtype == "MXFP4":
        raw[:, :, 0] = rng.integers(118, 128, size=(n_out, nb))
    if qtype == "IQ1_M":
        # the fp16 scale is the top nibbles of the 4 uint16 scale words (bytes 48..55): keep it ~2^-7
        for k, hi in zip((49, 51, 53, 55), (rng.integers(0, 16, (n_out, nb)),) * 3 + (2,)):
            raw[:, :, k] = (raw[:, :, k] & 0x0F) | (np.asarray(hi, np.uint8) << 4)
    for off in F16_FIELDS.get(qtype, []):
        d = (rng.random((n_out, nb)) * 0.02 + 0.001).astype(np.float16)
        raw[:, :, off:off + 2] = d.view(np.uint8).reshape(n_out, nb, 2)
    return QTensor(raw.reshape(n_out, nb * size), qtype, (n_out, n_in))


def _bf16(w):
    bits = (w.view(np.uint32) >> 16).astype(np.uint16)
    return QTensor(bits.view(np.uint8).reshape(w.shape[0], -1), "BF16", w.shape)


def _f16_bits(rng, n, lo=1e-3, hi=5e-2):
    """n random fp16 values of either sign with |v| in [lo, hi], as uint16 bits."""
    v = rng.uniform(lo, hi, n) * rng.choice([-1.0, 1.0], n)
    return v.astype(np.float16).view(np.uint16)


# byte offsets of the fp16 scales in each block (everything else stays random)
F16_SCALES = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
              "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ2_XXS": [0], "IQ2_XS": [0],
              "IQ2_S": [0], "IQ3_XXS": [0], "IQ3_S": [0], "IQ1_S": [0], "IQ4_NL": [0], "IQ4_XS": [0],
              "TQ1_0": [52], "TQ2_0": [64], "Q1_0": [0], "Q2_0": [0]}


def random_rows(qtype: str, n_rows: int, n_in: int, rng) -> np.ndarray:
    """u8[n_rows, row_bytes]: random blocks whose scales are sane finite fp16 values."""
    t = TYPES[qtype]
    if qtype == "F32":
        return rng.standard_normal((n_rows, n_in)).astype(np.float32).view(np.uint8)
    if qtype == "F16":
        return rng.standard_normal((n_rows, n_in)).astype(np.float16).view(np.uint8)
    if qtype == "BF16":
        f = rng.standard_normal((n_rows, n_in)).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    nb = n_rows * n_in // t.block_size
    b = rng.integers(0, 256, (nb, t.type_size), dtype=np.uint8)
    for off in F16_SCALES.get(qtype, []):
        b[:, off:off + 2] = _f16_bits(rng, nb).view(np.uint8).reshape(nb, 2)
    if qtype == "IQ1_M":                    # fp16 d spread over the top nibbles of 4 u16 scales
        d = _f16_bits(rng, nb).astype(np.uint16)
        sc = b[:, 48:56].copy().view(np.uint16).reshape(nb, 4)
        for k in range(4):
            sc[:, k] = (sc[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
        b[:, 48:56] = sc.view(np.uint8).reshape(nb, 8)
    if qtype == "MXFP4":                    # E8M0 exponent near 2^0
        b[:, 0] = rng.integers(118, 130, nb)
    if qtype == "NVFP4":                    # UE4M3 scales, all finite
        b[:, 0:4] = rng.integers(0, 0x7F, (nb, 4))
    return b.reshape(n_rows, -1)
