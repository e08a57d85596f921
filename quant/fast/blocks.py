"""Numba block dequantizers: one packed ggml block -> float32 values. The only set: the runtime's
kernels (runtime/kernels) inline them into their matmul loops, and ``quant.dequantize`` runs them
through ``dequantize_kernel`` (one kernel per type).

Each ``_deq_<type>(row, o, buf, lut)`` reads the block starting at byte ``o`` of ``row`` (uint8,
one packed weight row) and writes its values to ``buf[0:QK]``. ``lut`` is the f16 -> f32 table
(float32[65536]; Numba has no float16). ``deq_block_of(qt, ...)`` picks a type's dequantizer
from ``BLOCK_DEQ`` at compile time, for a constant ggml type id (``quant.types``). Layouts follow ggml-common.h; the float operations follow dequantize_row_* in
ggml-quants.c one for one, so results are bit-identical to the numpy references in quant/ref
(tests/quant/test_quant_api.py, tests/runtime/kernels/test_kernels_matmul.py).
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..ref.iq_tables import table
from ..types import BY_ID, TYPES, register_fast

# ggml type ids, from the one type table
(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ2_XXS, IQ2_XS, IQ2_S,
 IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0) = (
    TYPES[n].id for n in ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                          "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M",
                          "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0"))
# kvalues_iq4nl and kvalues_mxfp4 (ggml-common.h; mxfp4 values are doubled e2m1)
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                         dtype=np.float32)
KVALUES_MXFP4 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)


def _ue4m3_half_table() -> np.ndarray:
    """float32[256]: ggml_ue4m3_to_fp32 (ggml-impl.h) of every byte, i.e. the UE4M3 value * 0.5;
    0 and 0x7F give 0. All values are exact in float32."""
    u = np.arange(256)
    e = (u >> 3) & 0xF
    m = (u & 7).astype(np.float64)
    raw = np.where(e == 0, np.ldexp(m, -9), np.ldexp(1.0 + m / 8.0, e - 7))
    return np.where((u == 0) | (u == 0x7F), 0.0, raw * 0.5).astype(np.float32)


UE4M3_HALF = _ue4m3_half_table()


def _grid(name: str, cols: int, dtype=np.uint8) -> np.ndarray:
    """A ggml IQ grid (ggml-common.h) as float32 [n, cols], from quant's tables."""
    return np.ascontiguousarray(table(name).view(dtype).reshape(-1, cols), dtype=np.float32)


IQ2XXS_GRID = _grid("iq2xxs_grid", 8)                                   # [256, 8]
IQ2XS_GRID = _grid("iq2xs_grid", 8)                                     # [512, 8]
IQ2S_GRID = _grid("iq2s_grid", 8)                                       # [1024, 8]
IQ3XXS_GRID = _grid("iq3xxs_grid", 4)                                   # [256, 4]
IQ3S_GRID = _grid("iq3s_grid", 4)                                       # [512, 4]
IQ1S_GRID = _grid("iq1s_grid", 8, np.int8)                              # [2048, 8], values -1, 0, 1
KSIGNS_IQ2XS = table("ksigns_iq2xs").astype(np.int32)                   # [128]
IQ1S_DELTA = np.float32(0.125)


def make_f16_lut() -> np.ndarray:
    """float32[65536]: the value of every fp16 bit pattern."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


F16_LUT = make_f16_lut()


@njit(inline="always")
def _h(row, o, lut):
    """fp16 at byte o of row -> float32."""
    return lut[np.int64(row[o]) | (np.int64(row[o + 1]) << 8)]


@njit(inline="always")
def _u32(row, o):
    return (np.uint32(row[o]) | (np.uint32(row[o + 1]) << 8) | (np.uint32(row[o + 2]) << 16)
            | (np.uint32(row[o + 3]) << 24))


# ---------------------------------------------------------------- 32-blocks

@njit(inline="always")
def _deq_q4_0(row, o, buf, lut):
    # Q4_0: d:2 qs:16 -> x[j] = (lo - 8) d, x[j+16] = (hi - 8) d
    d = _h(row, o, lut)
    for j in range(16):
        q = np.int32(row[o + 2 + j])
        buf[j] = np.float32((q & 0xF) - 8) * d
        buf[j + 16] = np.float32((q >> 4) - 8) * d


@njit(inline="always")
def _deq_q4_1(row, o, buf, lut):
    # Q4_1: d:2 m:2 qs:16 -> x = q d + m
    d = _h(row, o, lut)
    m = _h(row, o + 2, lut)
    for j in range(16):
        q = np.int32(row[o + 4 + j])
        buf[j] = np.float32(q & 0xF) * d + m
        buf[j + 16] = np.float32(q >> 4) * d + m


@njit(inline="always")
def _deq_q5_0(row, o, buf, lut):
    # Q5_0: d:2 qh:4 qs:16 -> 5-bit q = nibble | bit j of qh << 4; x = (q - 16) d
    d = _h(row, o, lut)
    qh = _u32(row, o + 2)
    for j in range(16):
        q = np.int32(row[o + 6 + j])
        h0 = np.int32((qh >> np.uint32(j)) << np.uint32(4)) & 0x10
        h1 = np.int32(qh >> np.uint32(j + 12)) & 0x10
        buf[j] = np.float32(((q & 0xF) | h0) - 16) * d
        buf[j + 16] = np.float32(((q >> 4) | h1) - 16) * d


@njit(inline="always")
def _deq_q5_1(row, o, buf, lut):
    # Q5_1: d:2 m:2 qh:4 qs:16 -> x = q d + m
    d = _h(row, o, lut)
    m = _h(row, o + 2, lut)
    qh = _u32(row, o + 4)
    for j in range(16):
        q = np.int32(row[o + 8 + j])
        h0 = np.int32((qh >> np.uint32(j)) << np.uint32(4)) & 0x10
        h1 = np.int32(qh >> np.uint32(j + 12)) & 0x10
        buf[j] = np.float32((q & 0xF) | h0) * d + m
        buf[j + 16] = np.float32((q >> 4) | h1) * d + m


@njit(inline="always")
def _deq_q8_0(row, o, buf, lut):
    # Q8_0: d:2 qs:32 (int8) -> x = q d
    d = _h(row, o, lut)
    for j in range(32):
        buf[j] = np.float32(np.int8(row[o + 2 + j])) * d


@njit(inline="always")
def _deq_iq4_nl(row, o, buf, lut):
    # IQ4_NL: d:2 qs:16 -> x[j] = d kv[lo], x[j+16] = d kv[hi]
    d = _h(row, o, lut)
    for j in range(16):
        q = np.int32(row[o + 2 + j])
        buf[j] = d * KVALUES_IQ4NL[q & 0xF]
        buf[j + 16] = d * KVALUES_IQ4NL[q >> 4]


@njit(inline="always")
def _deq_mxfp4(row, o, buf, lut):
    # MXFP4: e:1 (e8m0) qs:16 -> x = kv[q] * 2^(e-127) / 2  (GGML_E8M0_TO_FP32_HALF)
    e = np.int32(row[o])
    d = np.float32(2.0 ** (e - 128))
    for j in range(16):
        q = np.int32(row[o + 1 + j])
        buf[j] = KVALUES_MXFP4[q & 0xF] * d
        buf[j + 16] = KVALUES_MXFP4[q >> 4] * d


@njit(inline="always")
def _deq_nvfp4(row, o, buf, lut):
    # NVFP4: d:4 (UE4M3 per 16) qs:32 -> per sub-block s: x[16s+j] = kv[lo] d, x[16s+8+j] = kv[hi] d
    for s in range(4):
        d = UE4M3_HALF[np.int64(row[o + s])]
        for j in range(8):
            q = np.int32(row[o + 4 + 8 * s + j])
            buf[16 * s + j] = KVALUES_MXFP4[q & 0xF] * d
            buf[16 * s + 8 + j] = KVALUES_MXFP4[q >> 4] * d


@njit(inline="always")
def _deq_q1_0(row, o, buf, lut):
    # Q1_0: d:2 qs:16 (128 values) -> x[j] = d if bit j else -d
    d = _h(row, o, lut)
    for b in range(16):
        q = np.int32(row[o + 2 + b])
        for k in range(8):
            buf[8 * b + k] = d if (q >> k) & 1 else -d


@njit(inline="always")
def _deq_q2_0(row, o, buf, lut):
    # Q2_0: d:2 qs:16 (64 values) -> x[4b+k] = ((qs[b] >> 2k & 3) - 1) d
    d = _h(row, o, lut)
    for b in range(16):
        q = np.int32(row[o + 2 + b])
        for k in range(4):
            buf[4 * b + k] = np.float32(((q >> (2 * k)) & 3) - 1) * d


# ---------------------------------------------------------------- K-quants (256-blocks)

@njit(inline="always")
def _scale_min_k4(j, row, o):
    """get_scale_min_k4: 6-bit (scale, min) number j from the 12 packed bytes at o."""
    if j < 4:
        return np.int32(row[o + j]) & 63, np.int32(row[o + j + 4]) & 63
    a = np.int32(row[o + j + 4])
    return (a & 0xF) | ((np.int32(row[o + j - 4]) >> 6) << 4), (a >> 4) | ((np.int32(row[o + j]) >> 6) << 4)


@njit(inline="always")
def _deq_q2_k(row, o, buf, lut):
    # Q2_K: scales:16 qs:64 d:2 dmin:2
    d = _h(row, o + 80, lut)
    dmin = _h(row, o + 82, lut)
    for n in range(2):
        q = o + 16 + 32 * n
        for j in range(4):
            shift = 2 * j
            for half in range(2):
                sc = np.int32(row[o + 8 * n + 2 * j + half])
                dl = d * np.float32(sc & 0xF)
                ml = dmin * np.float32(sc >> 4)
                k = 128 * n + 32 * j + 16 * half        # (a running counter kept LLVM from vectorizing)
                for l in range(16):
                    buf[k + l] = dl * np.float32((np.int32(row[q + 16 * half + l]) >> shift) & 3) - ml


@njit(inline="always")
def _deq_q3_k(row, o, buf, lut):
    # Q3_K: hmask:32 qs:64 scales:12 d:2; scale `is` = low4 | high2 << 4, minus 32
    d = _h(row, o + 108, lut)
    s0 = o + 96
    m = 1
    for n in range(2):
        q = o + 32 + 32 * n
        for j in range(4):
            shift = 2 * j
            for half in range(2):
                i = 8 * n + 2 * j + half
                lo = (np.int32(row[s0 + i]) & 0xF) if i < 8 else (np.int32(row[s0 + i - 8]) >> 4)
                hi = (np.int32(row[s0 + 8 + (i & 3)]) >> (2 * (i >> 2))) & 3
                dl = d * np.float32((lo | (hi << 4)) - 32)
                k = 128 * n + 32 * j + 16 * half
                for l in range(16):
                    qi = (np.int32(row[q + 16 * half + l]) >> shift) & 3
                    qi -= 4 * np.int32((np.int32(row[o + 16 * half + l]) & m) == 0)
                    buf[k + l] = dl * np.float32(qi)
            m <<= 1


@njit(inline="always")
def _deq_q45_k(row, o, buf, lut, q5):
    # Q4_K: d:2 dmin:2 scales:12 qs:128; Q5_K: d:2 dmin:2 scales:12 qh:32 qs:128
    # 8 sub-blocks of 32 with 6-bit scale/min; Q5_K adds bit j of qh as bit 4
    d = _h(row, o, lut)
    dmin = _h(row, o + 2, lut)
    qs = o + 48 if q5 else o + 16
    for j in range(4):
        sc1, m1 = _scale_min_k4(2 * j, row, o + 4)
        sc2, m2 = _scale_min_k4(2 * j + 1, row, o + 4)
        d1 = d * np.float32(sc1)
        mm1 = dmin * np.float32(m1)
        d2 = d * np.float32(sc2)
        mm2 = dmin * np.float32(m2)
        for l in range(32):
            v = np.int32(row[qs + 32 * j + l])
            lo = v & 0xF
            hi = v >> 4
            if q5:
                h = np.int32(row[o + 16 + l]) >> (2 * j)
                lo |= (h & 1) << 4
                hi |= (h & 2) << 3
            buf[64 * j + l] = d1 * np.float32(lo) - mm1
            buf[64 * j + 32 + l] = d2 * np.float32(hi) - mm2


@njit(inline="always")
def _deq_q6_k(row, o, buf, lut):
    # Q6_K: ql:128 qh:64 scales:16 (int8) d:2; x = d sc q, q = 6 bits - 32
    d = _h(row, o + 208, lut)
    for n in range(2):
        ql = o + 64 * n
        qh = o + 128 + 32 * n
        sc = o + 192 + 8 * n
        for i in range(2):               # 16 values share each scale: (d sc) hoisted, same rounding
            s1 = d * np.float32(np.int8(row[sc + i]))
            s2 = d * np.float32(np.int8(row[sc + i + 2]))
            s3 = d * np.float32(np.int8(row[sc + i + 4]))
            s4 = d * np.float32(np.int8(row[sc + i + 6]))
            for l in range(16 * i, 16 * i + 16):
                a = np.int32(row[ql + l])
                b = np.int32(row[ql + l + 32])
                h = np.int32(row[qh + l])
                base = 128 * n + l
                buf[base] = s1 * np.float32(((a & 0xF) | ((h & 3) << 4)) - 32)
                buf[base + 32] = s2 * np.float32(((b & 0xF) | (((h >> 2) & 3) << 4)) - 32)
                buf[base + 64] = s3 * np.float32(((a >> 4) | (((h >> 4) & 3) << 4)) - 32)
                buf[base + 96] = s4 * np.float32(((b >> 4) | (((h >> 6) & 3) << 4)) - 32)


@njit(inline="always")
def _deq_iq4_xs(row, o, buf, lut):
    # IQ4_XS: d:2 scales_h:2 scales_l:4 qs:128; 8 sub-blocks of 32, 6-bit scale - 32
    d = _h(row, o, lut)
    sh = np.int32(row[o + 2]) | (np.int32(row[o + 3]) << 8)
    for ib in range(8):
        ls = ((np.int32(row[o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
        dl = d * np.float32(ls - 32)
        q = o + 8 + 16 * ib
        for j in range(16):
            v = np.int32(row[q + j])
            buf[32 * ib + j] = dl * KVALUES_IQ4NL[v & 0xF]
            buf[32 * ib + 16 + j] = dl * KVALUES_IQ4NL[v >> 4]


@njit(inline="always")
def _deq_tq2_0(row, o, buf, lut):
    # TQ2_0: qs:64 d:2; x = (2-bit q - 1) d
    d = _h(row, o + 64, lut)
    for j in range(2):
        for l in range(4):
            for m in range(32):
                q = (np.int32(row[o + 32 * j + m]) >> (2 * l)) & 3
                buf[128 * j + 32 * l + m] = np.float32(q - 1) * d


@njit(inline="always")
def _tq1_trit(v, p):
    # uint8_t q = v * pow3; xi = ((uint16_t) q * 3) >> 8; returns xi - 1
    q = (v * p) & 0xFF
    return ((q * 3) >> 8) - 1


@njit(inline="always")
def _deq_tq1_0(row, o, buf, lut):
    # TQ1_0: qs:48 qh:4 d:2; 5 base-3 trits per qs byte, 4 per qh byte; x = (trit - 1) d
    d = _h(row, o + 52, lut)
    p = 1
    for n in range(5):
        for m in range(32):
            buf[32 * n + m] = np.float32(_tq1_trit(np.int32(row[o + m]), p)) * d
        for m in range(16):
            buf[160 + 16 * n + m] = np.float32(_tq1_trit(np.int32(row[o + 32 + m]), p)) * d
        if n < 4:
            for j in range(4):
                buf[240 + 4 * n + j] = np.float32(_tq1_trit(np.int32(row[o + 48 + j]), p)) * d
        p *= 3


# ---------------------------------------------------------------- IQ grid types

@njit(inline="always")
def _put_signed(buf, k, db, grid, g, signs, n):
    """buf[k + j] = db * grid[g, j] for j < n, negated where bit j of signs is set."""
    for j in range(n):
        v = db * grid[g, j]
        buf[k + j] = -v if (signs >> j) & 1 else v


@njit(inline="always")
def _deq_iq2_xxs(row, o, buf, lut):
    # IQ2_XXS: d:2 qs:64 (8 x [4 grid indices:4][signs 4x7 bits | scale 4 bits]:4)
    d = _h(row, o, lut)
    for ib in range(8):
        q = o + 2 + 8 * ib
        a1 = _u32(row, q + 4)
        db = d * (np.float32(0.5) + np.float32(a1 >> np.uint32(28))) * np.float32(0.25)
        for l in range(4):
            g = np.int64(row[q + l])
            signs = KSIGNS_IQ2XS[np.int64((a1 >> np.uint32(7 * l)) & np.uint32(127))]
            _put_signed(buf, 32 * ib + 8 * l, db, IQ2XXS_GRID, g, signs, 8)


@njit(inline="always")
def _deq_iq3_s(row, o, buf, lut):
    # IQ3_S: d:2 qs:64 qh:8 signs:32 scales:4; 9-bit grid index = qs | qh bit << 8
    d = _h(row, o, lut)
    k = 0
    for ib in range(8):                       # 32 values per ib; scale nibble ib & 1 of byte ib // 2
        sc = (np.int32(row[o + 106 + ib // 2]) >> (4 * (ib & 1))) & 0xF
        db = d * np.float32(1 + 2 * sc)
        qh = np.int32(row[o + 66 + ib])
        for l in range(4):
            g1 = np.int32(row[o + 2 + 8 * ib + 2 * l]) | ((qh << (8 - 2 * l)) & 256)
            g2 = np.int32(row[o + 2 + 8 * ib + 2 * l + 1]) | ((qh << (7 - 2 * l)) & 256)
            sg = np.int32(row[o + 74 + 4 * ib + l])
            _put_signed(buf, k, db, IQ3S_GRID, g1, sg, 4)
            _put_signed(buf, k + 4, db, IQ3S_GRID, g2, sg >> 4, 4)
            k += 8


@njit(inline="always")
def _deq_iq2_xs(row, o, buf, lut):
    # IQ2_XS: d:2 qs:64 (32 x uint16: 9-bit grid index | 7-bit sign index << 9) scales:8
    d = _h(row, o, lut)
    for ib in range(8):
        sc = np.int32(row[o + 66 + ib])
        for l in range(4):
            db = d * (np.float32(0.5) + np.float32((sc >> (4 * (l // 2))) & 0xF)) * np.float32(0.25)
            q = np.int64(row[o + 2 + 8 * ib + 2 * l]) | (np.int64(row[o + 3 + 8 * ib + 2 * l]) << 8)
            _put_signed(buf, 32 * ib + 8 * l, db, IQ2XS_GRID, q & 511, KSIGNS_IQ2XS[q >> 9], 8)


@njit(inline="always")
def _deq_iq2_s(row, o, buf, lut):
    # IQ2_S: d:2 qs:32 signs:32 qh:8 scales:8; 10-bit grid index = qs | (qh >> 2l & 3) << 8
    d = _h(row, o, lut)
    for ib in range(8):
        sc = np.int32(row[o + 74 + ib])
        qh = np.int64(row[o + 66 + ib])
        for l in range(4):
            db = d * (np.float32(0.5) + np.float32((sc >> (4 * (l // 2))) & 0xF)) * np.float32(0.25)
            g = np.int64(row[o + 2 + 4 * ib + l]) | ((qh << (8 - 2 * l)) & 0x300)
            _put_signed(buf, 32 * ib + 8 * l, db, IQ2S_GRID, g, np.int32(row[o + 34 + 4 * ib + l]), 8)


@njit(inline="always")
def _deq_iq3_xxs(row, o, buf, lut):
    # IQ3_XXS: d:2 qs:64 (grid indices) scales_and_signs:32 (8 x uint32: 4 x 7 sign bits | scale << 28)
    d = _h(row, o, lut)
    for ib in range(8):
        a = _u32(row, o + 66 + 4 * ib)
        db = d * (np.float32(0.5) + np.float32(a >> np.uint32(28))) * np.float32(0.5)
        for l in range(4):
            signs = KSIGNS_IQ2XS[np.int64((a >> np.uint32(7 * l)) & np.uint32(127))]
            g1 = np.int64(row[o + 2 + 8 * ib + 2 * l])
            g2 = np.int64(row[o + 2 + 8 * ib + 2 * l + 1])
            _put_signed(buf, 32 * ib + 8 * l, db, IQ3XXS_GRID, g1, signs, 4)
            _put_signed(buf, 32 * ib + 8 * l + 4, db, IQ3XXS_GRID, g2, signs >> 4, 4)


@njit(inline="always")
def _deq_iq1_s(row, o, buf, lut):
    # IQ1_S: d:2 qs:32 qh:8 x u16 (3 index bits per group | scale 3 bits << 12 | delta sign << 15)
    d = _h(row, o, lut)
    for ib in range(8):
        qh = np.int32(row[o + 34 + 2 * ib]) | (np.int32(row[o + 35 + 2 * ib]) << 8)
        dl = d * np.float32(2 * ((qh >> 12) & 7) + 1)
        delta = -IQ1S_DELTA if qh & 0x8000 else IQ1S_DELTA
        for l in range(4):
            g = np.int64(row[o + 2 + 4 * ib + l]) | (np.int64((qh >> (3 * l)) & 7) << 8)
            for j in range(8):
                buf[32 * ib + 8 * l + j] = dl * (IQ1S_GRID[g, j] + delta)


@njit(inline="always")
def _deq_iq1_m(row, o, buf, lut):
    # IQ1_M: qs:32 qh:16 (3 index bits + delta sign per group of 8) scales:8 (4 x u16: 3-bit
    # scales; the fp16 d in the top nibbles)
    s0 = np.int64(row[o + 48]) | (np.int64(row[o + 49]) << 8)
    s1 = np.int64(row[o + 50]) | (np.int64(row[o + 51]) << 8)
    s2 = np.int64(row[o + 52]) | (np.int64(row[o + 53]) << 8)
    s3 = np.int64(row[o + 54]) | (np.int64(row[o + 55]) << 8)
    d = lut[(s0 >> 12) | ((s1 >> 8) & 0xF0) | ((s2 >> 4) & 0xF00) | (s3 & 0xF000)]
    for ib in range(8):
        sc = np.int32(row[o + 48 + 2 * (ib // 2)]) | (np.int32(row[o + 49 + 2 * (ib // 2)]) << 8)
        dl1 = d * np.float32(2 * ((sc >> (6 * (ib % 2))) & 7) + 1)
        dl2 = d * np.float32(2 * ((sc >> (6 * (ib % 2) + 3)) & 7) + 1)
        for l in range(4):
            hh = np.int32(row[o + 32 + 2 * ib + l // 2]) >> (4 * (l % 2))
            g = np.int64(row[o + 4 * ib + l]) | (np.int64(hh & 7) << 8)
            delta = -IQ1S_DELTA if hh & 8 else IQ1S_DELTA
            dl = dl1 if l < 2 else dl2
            for j in range(8):
                buf[32 * ib + 8 * l + j] = dl * (IQ1S_GRID[g, j] + delta)


# ---------------------------------------------------------------- dispatch

@njit(inline="always")
def _deq_q4_k(row, o, buf, lut):
    _deq_q45_k(row, o, buf, lut, False)


@njit(inline="always")
def _deq_q5_k(row, o, buf, lut):
    _deq_q45_k(row, o, buf, lut, True)


# type id -> its block dequantizer f(row, byte offset, buf, lut); the block's size in values and
# bytes come from the type table (quant/types.py)
BLOCK_DEQ = {
    Q4_0: _deq_q4_0, Q4_1: _deq_q4_1, Q5_0: _deq_q5_0, Q5_1: _deq_q5_1, Q8_0: _deq_q8_0,
    Q2_K: _deq_q2_k, Q3_K: _deq_q3_k, Q4_K: _deq_q4_k, Q5_K: _deq_q5_k, Q6_K: _deq_q6_k,
    IQ2_XXS: _deq_iq2_xxs, IQ2_XS: _deq_iq2_xs, IQ2_S: _deq_iq2_s, IQ3_XXS: _deq_iq3_xxs, IQ3_S: _deq_iq3_s,
    IQ1_S: _deq_iq1_s, IQ1_M: _deq_iq1_m, IQ4_NL: _deq_iq4_nl, IQ4_XS: _deq_iq4_xs,
    TQ1_0: _deq_tq1_0, TQ2_0: _deq_tq2_0, MXFP4: _deq_mxfp4, NVFP4: _deq_nvfp4, Q1_0: _deq_q1_0, Q2_0: _deq_q2_0,
}
# the block types with a dequantizer here
BLOCK_TYPES = tuple(BY_ID[t].name for t in BLOCK_DEQ)


def deq_block_of(qt, row, b, buf, lut):
    """Dequantize block b of a packed row into buf, for a compile-time constant type id qt (a
    closure's captured int): only that type's dequantizer is typed and inlined (a per-type kernel
    compiles in about 1 s; one dispatching on a runtime id compiled all 25 in 14)."""


@overload(deq_block_of, inline="always", prefer_literal=True)
def _deq_block_of(qt, row, b, buf, lut):
    if not isinstance(qt, types.IntegerLiteral):
        raise TypeError("deq_block_of needs a constant type id")
    f, nbytes = BLOCK_DEQ[qt.literal_value], BY_ID[qt.literal_value].type_size

    def impl(qt, row, b, buf, lut):
        f(row, b * nbytes, buf, lut)
    return impl


def per_type_kernel(f, qt: int, **jit):
    """njit(**jit)(f) for a closure f over the constant type id qt, named ``<f>_<TYPE>`` so that
    each type's kernel has its own Numba cache index file (not one index shared by all types)."""
    f.__qualname__ = f"{f.__name__}_{BY_ID[qt].name}"
    return njit(**jit)(f)


_DEQ_KERNELS: dict = {}


def dequantize_kernel(qt: int):
    """dequantize_blocks(b, out, lut) for type id qt: b u8[nb, type_size] -> out f32[nb, block_size];
    built once per type as a closure over the constant id (cached on disk per type)."""
    k = _DEQ_KERNELS.get(qt)
    if k is None:
        def dequantize_blocks(b, out, lut):
            for i in prange(b.shape[0]):
                deq_block_of(qt, b[i], 0, out[i], lut)
        k = _DEQ_KERNELS[qt] = per_type_kernel(dequantize_blocks, qt, parallel=True, cache=True)
    return k


def _register(name: str) -> None:
    qt = TYPES[name].id
    register_fast(name, dequantize=lambda b, out: dequantize_kernel(qt)(b, out.reshape(b.shape[0], -1), F16_LUT))


for _name in BLOCK_TYPES:
    if _name != "Q8_0":          # numpy's vectorised Q8_0 (quant/ref) is faster than a block loop
        _register(_name)
