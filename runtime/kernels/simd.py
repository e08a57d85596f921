"""Small SIMD building blocks written as LLVM vector IR (``numba.extending.intrinsic``).

Numba types every integer product as int64, which keeps LLVM from using the int8/int16
multiply-adds ggml relies on. These intrinsics load a fixed number of bytes as LLVM vectors and
lower to vpmaddubsw / vpmaddwd / pshufb (AVX2) on x86; where the host has no AVX2 (or with
``GGUFKIT_GENERIC_SIMD=1``) the same arithmetic is written as plain vector IR. The kernels using
them (``qdot.py``, ``matmul.py``, ``attention.py``) are tested against the numpy references.

w: a packed weight row (uint8), o/wo: a byte offset in it; x: int8 activations, xo: an element
offset; xd: activation block scales (float32, one per 32), xs/bs: int16 16-sums of x; lut: the
fp16 -> f32 table; nb: blocks in the row. Offsets are not bounds-checked.

  intrinsic                                  computes
  dot_u_32(w, wo, sh, m, x, xo)              int32 sum_{j<32} ((w[wo+j] >> sh) & m) x[xo+j]   (TQ2_0)
  q2k_block / q3k_block(w, o, x, xo, bs, so) one Q2_K / Q3_K block -> (sum sc q x, sum m sum x)   int32 x2
  q4k_block / q5k_block(w, o, x, xo, bs, so) one Q4_K / Q5_K block -> (sum sc q x, sum m sum x)   int32 x2
  dot_q6k_256(w, o, x, xo)                   one Q6_K block: int32 sum sc (q - 32) x
  iq4xs_block(w, o, x, xo)                   one IQ4_XS block: int32 sum (ls - 32) sum kvalues[q] x
  iq2xxs_block / iq2xs_block(w, o, x, xo, grid, ksigns)
  iq3xxs_block(w, o, x, xo, grid, ksigns)
  iq2s_block / iq3s_block(w, o, x, xo, grid) one IQ block: int32 sum scale sum grid sign x (times d
                                             and the type's factor: the dot)
  row_q8_0 / row_q4_0 / row_q5_0 / row_iq4_nl / row_mxfp4(w, wo, x, xo, xd, xdo, lut, nb)
                                             float32 sum_b d_w(b) xd[b] sum_j q x over a row of
                                             32-blocks (ggml's AVX2 order: <8 x float> fma,
                                             hsum_float_8 once per row)
  row_q4_1 / row_q5_1(w, wo, x, xo, xd, xdo, xs, xso, lut, nb)
                                             the same plus sum_b m_w(b) xd[b] sum x (Q8_1 activations)
  rowdot_f16 / rowdot_bf16(w, wo, x, nvec)   float32 dot of 16 nvec fp16 / bf16 weights with f32 x
  half_to_f64(src, so, dst, n8)              dst[i] = float64(fp16 src[so+i]), i < 8 n8 (attention)

Block byte sizes come from the type table (``quant.types``).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from quant.types import TYPES

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()
_SIZE = {n: t.type_size for n, t in TYPES.items()}    # bytes per block


def _ptr(context, builder, aty, ary, off):
    a = context.make_array(aty)(context, builder, ary)
    return builder.gep(a.data, [off])


def _load(builder, ptr, n):
    vty = ir.VectorType(_I8, n)
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)


def _reduce(builder, v, n):
    vty = ir.VectorType(_I32, n)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [vty]),
                                        f"llvm.vector.reduce.add.v{n}i32")
    return builder.call(fn, [v])


def _splat(builder, val, n):
    vty = ir.VectorType(_I32, n)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(vty, [0] * n))


def _dot_u(n):
    def impl(typingctx, w, wo, sh, m, x, xo):
        sig = types.int32(w, wo, sh, m, x, xo)

        def codegen(context, builder, signature, args):
            vty = ir.VectorType(_I32, n)
            a = builder.zext(_load(builder, _ptr(context, builder, signature.args[0], args[0], args[1]), n), vty)
            shv = _splat(builder, builder.trunc(args[2], _I32), n)
            mv = _splat(builder, builder.trunc(args[3], _I32), n)
            a = builder.and_(builder.lshr(a, shv), mv)
            b = builder.sext(_load(builder, _ptr(context, builder, signature.args[4], args[4], args[5]), n), vty)
            return _reduce(builder, builder.mul(a, b), n)
        return sig, codegen
    return impl


dot_u_32 = intrinsic(_dot_u(32))


def _cvec(values):
    return ir.Constant(ir.VectorType(_I32, len(values)), list(values))


# ---------------------------------------------------------------- float rows (F16 / BF16 weights)

def _rowdot_16bit(kind):
    def impl(typingctx, w, wo, x, nvec):
        sig = types.float32(w, wo, x, nvec)

        def codegen(context, builder, signature, args):
            v16f = ir.VectorType(_F32, 16)
            v16h = ir.VectorType(ir.IntType(16), 16)
            w0 = _ptr(context, builder, signature.args[0], args[0], args[1])
            x0 = _ptr(context, builder, signature.args[2], args[2], ir.Constant(args[1].type, 0))
            acc = cgutils.alloca_once_value(builder, ir.Constant(v16f, [0.0] * 16))
            with cgutils.for_range(builder, args[3]) as loop:
                i = builder.mul(loop.index, ir.Constant(loop.index.type, 16))
                hv = builder.load(builder.bitcast(builder.gep(w0, [i]), v16h.as_pointer()), align=1)
                if kind == "f16":
                    wv = builder.fpext(builder.bitcast(hv, ir.VectorType(ir.HalfType(), 16)), v16f)
                else:   # bf16: the high half of a float32
                    u = builder.shl(builder.zext(hv, ir.VectorType(_I32, 16)), _cvec([16] * 16))
                    wv = builder.bitcast(u, v16f)
                xv = builder.load(builder.bitcast(builder.gep(x0, [i]), v16f.as_pointer()), align=4)
                builder.store(builder.fadd(builder.load(acc), builder.fmul(wv, xv)), acc)
            a = builder.load(acc)
            s = builder.extract_element(a, ir.Constant(_I32, 0))
            for k in range(1, 16):
                s = builder.fadd(s, builder.extract_element(a, ir.Constant(_I32, k)))
            return s
        return sig, codegen
    return impl


# rowdot_f16(w, wo, x, nvec) / rowdot_bf16: sum_{i < 16 nvec} float(w[wo+i]) * x[i] for a uint16
# row of fp16 / bf16 bits and a float32 x (16 lanes per step, one horizontal sum at the end).
rowdot_f16 = intrinsic(_rowdot_16bit("f16"))
rowdot_bf16 = intrinsic(_rowdot_16bit("bf16"))




# ---------------------------------------------------------------- whole K-quant blocks, x86 madd route
#
# ggml's AVX2 vec_dot: u8 x s8 products summed in pairs to i16 (vpmaddubsw), then times the
# sub-block scale summed in pairs to i32 (vpmaddwd), accumulated in one <8 x i32> per 256-block:
# one horizontal sum per block instead of one per 32 values, and no 32-bit multiplies.
# Where the host has no AVX2 the same arithmetic is written as plain vector IR.

def _host_has(feature: str) -> bool:
    try:
        import llvmlite.binding as llvm
        return bool(llvm.get_host_cpu_features().get(feature))
    except Exception:  # noqa: BLE001 - unknown host: take the generic IR
        return False


# GGUFKIT_GENERIC_SIMD=1 forces the generic IR (tests use it, with their own Numba cache directory:
# the on-disk cache does not know about this switch)
HAS_AVX2 = _host_has("avx2") and not __import__("os").environ.get("GGUFKIT_GENERIC_SIMD")
_I16 = ir.IntType(16)


def _maddubs(builder, u, s):
    """<32 x i8> u (unsigned), s (signed) -> <16 x i16>: u[2i] s[2i] + u[2i+1] s[2i+1] (saturating)."""
    v16 = ir.VectorType(_I16, 16)
    if HAS_AVX2:
        v8 = ir.VectorType(_I8, 32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v8, v8]),
                                            "llvm.x86.avx2.pmadd.ub.sw")
        return builder.call(fn, [u, s])
    w = ir.VectorType(_I16, 32)
    p = builder.mul(builder.zext(u, w), builder.sext(s, w))
    ev = builder.shuffle_vector(p, p, _cvec(range(0, 32, 2)))
    od = builder.shuffle_vector(p, p, _cvec(range(1, 32, 2)))
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v16, [v16, v16]), "llvm.sadd.sat.v16i16")
    return builder.call(fn, [ev, od])


def _maddwd(builder, a, b):
    """<16 x i16> a, b -> <8 x i32>: a[2i] b[2i] + a[2i+1] b[2i+1]."""
    v8 = ir.VectorType(_I32, 8)
    if HAS_AVX2:
        v16 = ir.VectorType(_I16, 16)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v16, v16]), "llvm.x86.avx2.pmadd.wd")
        return builder.call(fn, [a, b])
    w = ir.VectorType(_I32, 16)
    p = builder.mul(builder.sext(a, w), builder.sext(b, w))
    ev = builder.shuffle_vector(p, p, _cvec(range(0, 16, 2)))
    od = builder.shuffle_vector(p, p, _cvec(range(1, 16, 2)))
    return builder.add(ev, od)


def _c8(v, n=32):
    return ir.Constant(ir.VectorType(_I8, n), [v] * n)


def _splat16(builder, val, n=16):
    vty = ir.VectorType(_I16, n)
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), val, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(_I32, n), [0] * n))


def _byte_at(builder, base, off):
    return builder.load(builder.gep(base, [ir.Constant(_I32, off)]))


@intrinsic
def dot_q6k_256(typingctx, w, o, x, xo):
    """One Q6_K block (ql:128 qh:64 scales:16 at w[o]) against int8 x[xo:xo+256]:
    sum_k sc[k/16] (q_k - 32) x_k, as integers."""
    sig = types.int32(w, o, x, xo)

    def codegen(context, builder, signature, args):
        wp = _ptr(context, builder, signature.args[0], args[0], args[1])
        xp = _ptr(context, builder, signature.args[2], args[2], args[3])
        acc = None
        for n in range(2):
            ql0 = _load(builder, builder.gep(wp, [ir.Constant(_I32, 64 * n)]), 32)
            ql1 = _load(builder, builder.gep(wp, [ir.Constant(_I32, 64 * n + 32)]), 32)
            qh = _load(builder, builder.gep(wp, [ir.Constant(_I32, 128 + 32 * n)]), 32)
            parts = ((ql0, False, 0), (ql1, False, 2), (ql0, True, 4), (ql1, True, 6))
            for g, (ql, high, hs) in enumerate(parts):
                lo = builder.lshr(ql, _c8(4)) if high else builder.and_(ql, _c8(15))
                h = builder.and_(builder.lshr(qh, _c8(hs)), _c8(3)) if hs else builder.and_(qh, _c8(3))
                q = builder.or_(lo, builder.shl(h, _c8(4)))
                xv = _load(builder, builder.gep(xp, [ir.Constant(_I32, 128 * n + 32 * g)]), 32)
                p = builder.sub(_maddubs(builder, q, xv), _maddubs(builder, _c8(32), xv))
                k = 192 + 8 * n + 2 * g
                sa = builder.sext(_byte_at(builder, wp, k), _I16)
                sb = builder.sext(_byte_at(builder, wp, k + 1), _I16)
                sv = builder.shuffle_vector(_splat16(builder, sa, 8), _splat16(builder, sb, 8), _cvec(range(16)))
                p = _maddwd(builder, p, sv)
                acc = p if acc is None else builder.add(acc, p)
        return _reduce(builder, acc, 8)
    return sig, codegen


def _i32_at(builder, bp, off):
    """unaligned little-endian u32 at byte pointer bp + off."""
    p = builder.bitcast(builder.gep(bp, [ir.Constant(_I32, off)]), _I32.as_pointer())
    return builder.load(p, align=1)


def _bytes(context, builder, aty, ary, off):
    """i8* to element ``off`` of an array of any integer type."""
    return builder.bitcast(_ptr(context, builder, aty, ary, off), _I8.as_pointer())


def _k45_block(with_h):
    def impl(typingctx, w, o, x, xo, bs, bso):
        """One whole Q4_K block (d:2 dmin:2 scales:12 qs:128 at w[o]) against int8 x[xo:xo+256]:
        (sum_k sc[k/32] q_k x_k, sum_j m_j sum_{k in sub-block j} x_k) as int32, the second from
        the int16 16-sums bs[bso:bso+16]. The 6-bit scales/mins are unpacked in registers
        (ggml's kmask trick)."""
        sig = types.UniTuple(types.int32, 2)(w, o, x, xo, bs, bso)

        def codegen(context, builder, signature, args):
            wb = _bytes(context, builder, signature.args[0], args[0], args[1])
            xp = _ptr(context, builder, signature.args[2], args[2], args[3])
            k1, k2, k3 = (ir.Constant(_I32, v) for v in (0x3F3F3F3F, 0x0F0F0F0F, 0x03030303))
            c4, c6 = ir.Constant(_I32, 4), ir.Constant(_I32, 6)
            u0, u1, u2 = (_i32_at(builder, wb, 4 + 4 * i) for i in range(3))
            t3 = builder.or_(builder.and_(builder.lshr(u2, c4), k2), builder.shl(builder.and_(builder.lshr(u1, c6), k3), c4))
            t2 = builder.and_(u1, k1)
            t1 = builder.or_(builder.and_(u2, k2), builder.shl(builder.and_(builder.lshr(u0, c6), k3), c4))
            t0 = builder.and_(u0, k1)
            v4 = ir.VectorType(_I32, 4)
            sv = ir.Constant(v4, ir.Undefined)
            for i, t in enumerate((t0, t1, t2, t3)):
                sv = builder.insert_element(sv, t, ir.Constant(_I32, i))
            sb = builder.bitcast(sv, ir.VectorType(_I8, 16))           # bytes 0..7 scales, 8..15 mins
            qb = builder.gep(wb, [ir.Constant(_I32, 48 if with_h else 16)])
            qh = _load(builder, builder.gep(wb, [ir.Constant(_I32, 16)]), 32) if with_h else None
            acc = None
            for i in range(4):
                q = _load(builder, builder.gep(qb, [ir.Constant(_I32, 32 * i)]), 32)
                lo = builder.and_(q, _c8(15))
                hi = builder.lshr(q, _c8(4))
                if with_h:
                    h0 = builder.and_(builder.lshr(qh, _c8(2 * i)), _c8(1)) if i else builder.and_(qh, _c8(1))
                    h1 = builder.and_(builder.lshr(qh, _c8(2 * i + 1)), _c8(1))
                    lo = builder.or_(lo, builder.shl(h0, _c8(4)))
                    hi = builder.or_(hi, builder.shl(h1, _c8(4)))
                x0 = _load(builder, builder.gep(xp, [ir.Constant(_I32, 64 * i)]), 32)
                x1 = _load(builder, builder.gep(xp, [ir.Constant(_I32, 64 * i + 32)]), 32)
                s0 = _splat16(builder, builder.zext(builder.extract_element(sb, ir.Constant(_I32, 2 * i)), _I16))
                s1 = _splat16(builder, builder.zext(builder.extract_element(sb, ir.Constant(_I32, 2 * i + 1)), _I16))
                p = builder.add(_maddwd(builder, _maddubs(builder, lo, x0), s0),
                                _maddwd(builder, _maddubs(builder, hi, x1), s1))
                acc = p if acc is None else builder.add(acc, p)
            sumi = _reduce(builder, acc, 8)
            mins = builder.zext(builder.shuffle_vector(sb, sb, _cvec([8 + j // 2 for j in range(16)])),
                                ir.VectorType(_I16, 16))
            bp = builder.bitcast(_ptr(context, builder, signature.args[4], args[4], args[5]),
                                 ir.VectorType(_I16, 16).as_pointer())
            bsv = builder.load(bp, align=2)
            summ = _reduce(builder, _maddwd(builder, mins, bsv), 8)
            return context.make_tuple(builder, signature.return_type, [sumi, summ])
        return sig, codegen
    return impl


# q4k_block(w, o, x, xo, bs, bso) / q5k_block: one whole Q4_K / Q5_K block at w[o] against int8
# x[xo:xo+256] -> (sum_k sc[k/32] q_k x_k, sum_j m_j sum_{k in j} x_k) as int32; the second from the
# int16 16-sums bs[bso:bso+16]. 6-bit scales/mins unpacked in registers (ggml's kmask trick).
q4k_block = intrinsic(_k45_block(False))
q5k_block = intrinsic(_k45_block(True))


def _k23_block(q3):
    def impl(typingctx, w, o, x, xo, bs, bso):
        """One whole Q2_K block (scales:16 qs:64 d:2 dmin:2 at w[o]) or Q3_K block (hmask:32
        qs:64 scales:12 d:2) against int8 x[xo:xo+256] -> (sum_k sc[k/16] q_k x_k,
        sum_g m_g sum_{k in g} x_k) as int32 (Q3_K: signed 6-bit scales, q in -4..3, no mins;
        the second is 0). As ggml's AVX2 code: pmaddubsw of the 2-bit values with x, pmaddwd
        with the group scales, one horizontal sum per block."""
        sig = types.UniTuple(types.int32, 2)(w, o, x, xo, bs, bso)

        def codegen(context, builder, signature, args):
            wb = _bytes(context, builder, signature.args[0], args[0], args[1])
            xp = _ptr(context, builder, signature.args[2], args[2], args[3])
            v16 = ir.VectorType(_I16, 16)
            if q3:
                k1, k2 = ir.Constant(_I32, 0x03030303), ir.Constant(_I32, 0x0F0F0F0F)
                a0, a1, tmp = (_i32_at(builder, wb, 96 + 4 * i) for i in range(3))

                def part(a, sh_a, sh_t):
                    lo = builder.and_(builder.lshr(a, ir.Constant(_I32, sh_a)) if sh_a else a, k2)
                    hi = builder.and_(builder.lshr(tmp, ir.Constant(_I32, sh_t)) if sh_t else tmp, k1)
                    return builder.or_(lo, builder.shl(hi, ir.Constant(_I32, 4)))
                words = (part(a0, 0, 0), part(a1, 0, 2), part(a0, 4, 4), part(a1, 4, 6))
                sv = ir.Constant(ir.VectorType(_I32, 4), ir.Undefined)
                for i, t in enumerate(words):
                    sv = builder.insert_element(sv, t, ir.Constant(_I32, i))
                sb = builder.bitcast(sv, ir.VectorType(_I8, 16))
                scales = builder.sub(builder.zext(sb, v16), ir.Constant(v16, [32] * 16))   # -32..31
                qb = builder.gep(wb, [ir.Constant(_I32, 32)])
                hm = _load(builder, wb, 32)
            else:
                sb = _load(builder, wb, 16)
                scales = builder.zext(builder.and_(sb, _c8(15, 16)), v16)
                qb = builder.gep(wb, [ir.Constant(_I32, 16)])
            acc = None
            for n in range(2):
                qv = _load(builder, builder.gep(qb, [ir.Constant(_I32, 32 * n)]), 32)
                for j in range(4):
                    q = builder.and_(builder.lshr(qv, _c8(2 * j)) if j else qv, _c8(3))
                    xv = _load(builder, builder.gep(xp, [ir.Constant(_I32, 128 * n + 32 * j)]), 32)
                    p = _maddubs(builder, q, xv)
                    if q3:                                   # minus 4 where the high bit is clear
                        h = builder.and_(builder.lshr(hm, _c8(4 * n + j)) if 4 * n + j else hm, _c8(1))
                        h4 = builder.shl(builder.xor(h, _c8(1)), _c8(2))
                        p = builder.sub(p, _maddubs(builder, h4, xv))
                    g = 8 * n + 2 * j
                    sc = builder.shuffle_vector(scales, scales, _cvec([g] * 8 + [g + 1] * 8))
                    p = _maddwd(builder, p, sc)
                    acc = p if acc is None else builder.add(acc, p)
            sumi = _reduce(builder, acc, 8)
            if q3:
                summ = ir.Constant(_I32, 0)
            else:
                mins = builder.zext(builder.lshr(sb, _c8(4, 16)), v16)
                bp = builder.bitcast(_ptr(context, builder, signature.args[4], args[4], args[5]), v16.as_pointer())
                summ = _reduce(builder, _maddwd(builder, mins, builder.load(bp, align=2)), 8)
            return context.make_tuple(builder, signature.return_type, [sumi, summ])
        return sig, codegen
    return impl


# q2k_block(w, o, x, xo, bs, bso) / q3k_block: one whole Q2_K / Q3_K block at w[o] against int8
# x[xo:xo+256] -> (sum_k sc[k/16] q_k x_k, sum_g m_g sum_{k in g} x_k) as int32 (Q3_K: 0 mins).
q2k_block = intrinsic(_k23_block(False))
q3k_block = intrinsic(_k23_block(True))


# ---------------------------------------------------------------- whole rows of 32-blocks (Q8_0 / Q4_0 / Q5_0)
#
# One call per row and token: each block's integer dot (vpmaddubsw + vpmaddwd) is converted to
# float and multiply-added with d_w * d_x into an <8 x float> accumulator; one horizontal sum per
# row (ggml's AVX2 vec_dot_q4_0_q8_0 does the same).

_F8 = ir.VectorType(_F32, 8)


def _ones16(builder):
    return ir.Constant(ir.VectorType(_I16, 16), [1] * 16)


def _blk_q8_0(builder, wb, xv):
    """<8 x i32> partial sums of int8 w[0:32] * x (sign trick: |w| * (x signed by w))."""
    wv = _load(builder, builder.gep(wb, [ir.Constant(_I32, 2)]), 32)
    return _maddwd(builder, _dot_s8s8(builder, wv, xv), _ones16(builder))


def _nib32(builder, qp):
    """16 packed bytes -> <32 x i8>: low nibbles then high nibbles."""
    b = _load(builder, qp, 16)
    lo = builder.and_(b, _c8(15, 16))
    hi = builder.lshr(b, _c8(4, 16))
    return builder.shuffle_vector(lo, hi, _cvec(range(32)))


def _blk_q4_0(builder, wb, xv):
    q = _nib32(builder, builder.gep(wb, [ir.Constant(_I32, 2)]))
    p = builder.sub(_maddubs(builder, q, xv), _maddubs(builder, _c8(8), xv))
    return _maddwd(builder, p, _ones16(builder))


def _blk_q5_0(builder, wb, xv):
    q = _nib32(builder, builder.gep(wb, [ir.Constant(_I32, 6)]))
    h = _splat(builder, _i32_at(builder, wb, 2), 32)
    hb = builder.trunc(builder.and_(builder.lshr(h, _cvec(range(32))), _cvec([1] * 32)), ir.VectorType(_I8, 32))
    q = builder.or_(q, builder.shl(hb, _c8(4)))
    p = builder.sub(_maddubs(builder, q, xv), _maddubs(builder, _c8(16), xv))
    return _maddwd(builder, p, _ones16(builder))


def _hsum_float_8(builder, a):
    """ggml's hsum_float_8 order: r_i = a_{i+4} + a_i, then (r_0 + r_2) + (r_1 + r_3)."""
    e = [builder.extract_element(a, ir.Constant(_I32, k)) for k in range(8)]
    r = [builder.fadd(e[k + 4], e[k]) for k in range(4)]
    return builder.fadd(builder.fadd(r[0], r[2]), builder.fadd(r[1], r[3]))


def _fp16_scale(builder, blk_w, lp):
    """The block's leading fp16 scale, through the f32 table."""
    dh = builder.load(builder.bitcast(blk_w, ir.IntType(16).as_pointer()), align=1)
    return builder.load(builder.gep(lp, [builder.zext(dh, ir.IntType(64))]))


def _e8m0_half_scale(builder, blk_w, lp):
    """GGML_E8M0_TO_FP32_HALF of the block's leading byte e: 2^(e - 128) as float32 bits
    (e < 2: the subnormals 0x00200000 << e; else (e - 1) << 23)."""
    e = builder.zext(builder.load(blk_w), _I32)
    small = builder.icmp_unsigned("<", e, ir.Constant(_I32, 2))
    bits = builder.select(small, builder.shl(ir.Constant(_I32, 0x00200000), e),
                          builder.shl(builder.sub(e, ir.Constant(_I32, 1)), ir.Constant(_I32, 23)))
    return builder.bitcast(bits, _F32)


def _row32(blk, bsize, scale=_fp16_scale):
    def impl(typingctx, w, wo, x, xo, xd, xdo, lut, nb):
        sig = types.float32(w, wo, x, xo, xd, xdo, lut, nb)

        def codegen(context, builder, signature, args):
            wb = _bytes(context, builder, signature.args[0], args[0], args[1])
            xb = _bytes(context, builder, signature.args[2], args[2], args[3])
            dp = _ptr(context, builder, signature.args[4], args[4], args[5])
            lp = _ptr(context, builder, signature.args[6], args[6], ir.Constant(args[5].type, 0))
            acc = cgutils.alloca_once_value(builder, ir.Constant(_F8, [0.0] * 8))
            with cgutils.for_range(builder, args[7]) as loop:
                i = loop.index
                blk_w = builder.gep(wb, [builder.mul(i, ir.Constant(i.type, bsize))])
                xv = _load(builder, builder.gep(xb, [builder.mul(i, ir.Constant(i.type, 32))]), 32)
                s = builder.sitofp(blk(builder, blk_w, xv), _F8)
                f = builder.fmul(scale(builder, blk_w, lp), builder.load(builder.gep(dp, [i])))
                fv = builder.shuffle_vector(builder.insert_element(ir.Constant(_F8, ir.Undefined), f,
                                                                   ir.Constant(_I32, 0)),
                                            ir.Constant(_F8, ir.Undefined), _cvec([0] * 8))
                fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F8, [_F8, _F8, _F8]),
                                                     "llvm.fma.v8f32")
                builder.store(builder.call(fma, [fv, s, builder.load(acc)]), acc)    # ggml: fmadd(d, q, acc)
            return _hsum_float_8(builder, builder.load(acc))
        return sig, codegen
    return impl


def _blk_q4_1(builder, wb, xv):
    q = _nib32(builder, builder.gep(wb, [ir.Constant(_I32, 4)]))
    return _maddwd(builder, _maddubs(builder, q, xv), _ones16(builder))


def _blk_q5_1(builder, wb, xv):
    q = _nib32(builder, builder.gep(wb, [ir.Constant(_I32, 8)]))
    h = _splat(builder, _i32_at(builder, wb, 4), 32)
    hb = builder.trunc(builder.and_(builder.lshr(h, _cvec(range(32))), _cvec([1] * 32)), ir.VectorType(_I8, 32))
    q = builder.or_(q, builder.shl(hb, _c8(4)))
    return _maddwd(builder, _maddubs(builder, q, xv), _ones16(builder))


def _row32_min(blk, bsize):
    """Q4_1/Q5_1 rows (d:2 m:2 ... per 32): sum_b d_b xd_b sum q x + m_b xd_b sum x, with
    the block sums of x from the int16 16-sums xs (two per block); two <8 x float> accumulators."""
    def impl(typingctx, w, wo, x, xo, xd, xdo, xs, xso, lut, nb):
        sig = types.float32(w, wo, x, xo, xd, xdo, xs, xso, lut, nb)

        def codegen(context, builder, signature, args):
            wb = _bytes(context, builder, signature.args[0], args[0], args[1])
            xb = _bytes(context, builder, signature.args[2], args[2], args[3])
            dp = _ptr(context, builder, signature.args[4], args[4], args[5])
            sp = _ptr(context, builder, signature.args[6], args[6], args[7])
            lp = _ptr(context, builder, signature.args[8], args[8], ir.Constant(args[5].type, 0))
            acc = cgutils.alloca_once_value(builder, ir.Constant(_F8, [0.0] * 8))
            accm = cgutils.alloca_once_value(builder, ir.Constant(_F32, 0.0))
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F8, [_F8, _F8, _F8]),
                                                 "llvm.fma.v8f32")
            with cgutils.for_range(builder, args[9]) as loop:
                i = loop.index
                blk_w = builder.gep(wb, [builder.mul(i, ir.Constant(i.type, bsize))])
                xv = _load(builder, builder.gep(xb, [builder.mul(i, ir.Constant(i.type, 32))]), 32)
                s = builder.sitofp(blk(builder, blk_w, xv), _F8)
                hp = builder.bitcast(blk_w, ir.IntType(16).as_pointer())
                dw = builder.load(builder.gep(lp, [builder.zext(builder.load(hp, align=1), ir.IntType(64))]))
                mw = builder.load(builder.gep(lp, [builder.zext(builder.load(builder.gep(hp, [ir.Constant(_I32, 1)]),
                                                                             align=1), ir.IntType(64))]))
                xdi = builder.load(builder.gep(dp, [i]))
                f = builder.fmul(dw, xdi)
                fv = builder.shuffle_vector(builder.insert_element(ir.Constant(_F8, ir.Undefined), f,
                                                                   ir.Constant(_I32, 0)),
                                            ir.Constant(_F8, ir.Undefined), _cvec([0] * 8))
                builder.store(builder.call(fma, [fv, s, builder.load(acc)]), acc)
                j = builder.mul(i, ir.Constant(i.type, 2))
                sx = builder.add(builder.sext(builder.load(builder.gep(sp, [j])), _I32),
                                 builder.sext(builder.load(builder.gep(sp, [builder.add(j, ir.Constant(i.type, 1))])), _I32))
                builder.store(builder.fadd(builder.load(accm), builder.fmul(builder.fmul(mw, xdi), builder.sitofp(sx, _F32))),
                              accm)
            return builder.fadd(_hsum_float_8(builder, builder.load(acc)), builder.load(accm))
        return sig, codegen
    return impl


# row_q4_1(w, wo, x, xo, xd, xdo, xs, xso, lut, nb) / row_q5_1: Q4_1 / Q5_1 rows against Q8_1-style
# activations (int8 x, scales xd per 32, int16 16-sums xs).
row_q4_1 = intrinsic(_row32_min(_blk_q4_1, _SIZE["Q4_1"]))
row_q5_1 = intrinsic(_row32_min(_blk_q5_1, _SIZE["Q5_1"]))


# row_q8_0(w, wo, x, xo, xd, xdo, lut, nb): sum over nb blocks of d_w(b) xd[xdo+b] sum_j q_w x (float32);
# w: the packed row (uint8, blocks at wo), x: int8 activations at xo, lut: the fp16 -> f32 table.
row_q8_0 = intrinsic(_row32(_blk_q8_0, _SIZE["Q8_0"]))
row_q4_0 = intrinsic(_row32(_blk_q4_0, _SIZE["Q4_0"]))
row_q5_0 = intrinsic(_row32(_blk_q5_0, _SIZE["Q5_0"]))


# ---------------------------------------------------------------- IQ types: grids, sign bits, non-linear tables

KVALUES_IQ4NL_I8 = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _dot_s8s8(builder, wv, xv):
    """<32 x i8> signed w, x -> <16 x i16> pair sums (|w| times x with w's sign; |products| < 2^14)."""
    if HAS_AVX2:                      # ggml's mul_add_epi8: psignb(w, w), psignb(x, w), pmaddubsw
        v8 = ir.VectorType(_I8, 32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8]), "llvm.x86.avx2.psign.b")
        return _maddubs(builder, builder.call(fn, [wv, wv]), builder.call(fn, [xv, wv]))
    neg = builder.icmp_signed("<", wv, _c8(0))
    aw = builder.select(neg, builder.sub(_c8(0), wv), wv)
    sx = builder.select(neg, builder.sub(_c8(0), xv), xv)
    return _maddubs(builder, aw, sx)


def _lookup16(builder, table, idx):
    """<32 x i8> idx (each 0..15) -> table[idx] (pshufb on x86; lane by lane elsewhere)."""
    v8 = ir.VectorType(_I8, 32)
    if HAS_AVX2:
        tv = ir.Constant(v8, [v & 0xFF for v in list(table) * 2])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8]), "llvm.x86.avx2.pshuf.b")
        return builder.call(fn, [tv, idx])
    tv = ir.Constant(ir.VectorType(_I8, 16), [v & 0xFF for v in table])
    out = ir.Constant(v8, ir.Undefined)
    for k in range(32):
        out = builder.insert_element(out, builder.extract_element(tv, builder.extract_element(idx, ir.Constant(_I32, k))),
                                     ir.Constant(_I32, k))
    return out


def _signed_by_bits(builder, xv, bits):
    """x with lane k negated where bit k of the i32 ``bits`` is set (byte broadcast + bit test)."""
    v4 = builder.insert_element(ir.Constant(ir.VectorType(_I32, 1), ir.Undefined), bits, ir.Constant(_I32, 0))
    b4 = builder.bitcast(v4, ir.VectorType(_I8, 4))
    b32 = builder.shuffle_vector(b4, b4, _cvec([k // 8 for k in range(32)]))
    m = builder.and_(b32, ir.Constant(ir.VectorType(_I8, 32), [1 << (k % 8) for k in range(32)]))
    neg = builder.icmp_unsigned("!=", m, _c8(0))
    return builder.select(neg, builder.sub(_c8(0), xv), xv)


def _sign_apply(builder, xv, sv):
    """x times the sign vector sv (<32 x i8> of +1 / -1): psignb like ggml, or a select elsewhere."""
    if HAS_AVX2:
        v8 = ir.VectorType(_I8, 32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8]), "llvm.x86.avx2.psign.b")
        return builder.call(fn, [xv, sv])
    return builder.select(builder.icmp_signed("<", sv, _c8(0)), builder.sub(_c8(0), xv), xv)


def _even_signs(builder, sp, idx):
    """Four 7-bit sign indices -> <32 x i8> of +1/-1 from the 64-bit table at sp (ggml's
    keven_signs_q2xs: byte j of entry i is -1 where bit j of ksigns_iq2xs[i] is set)."""
    v4 = ir.Constant(ir.VectorType(ir.IntType(64), 4), ir.Undefined)
    for l, i in enumerate(idx):
        v4 = builder.insert_element(v4, builder.load(builder.gep(sp, [i])), ir.Constant(_I32, l))
    return builder.bitcast(v4, ir.VectorType(_I8, 32))


def _u8_at(builder, bp, off):
    return builder.zext(_byte_at(builder, bp, off) if isinstance(off, int) else builder.load(builder.gep(bp, [off])),
                        _I32)


def _xload(builder, xp, off):
    return _load(builder, builder.gep(xp, [ir.Constant(_I32, off)]), 32)


def _finish(builder, acc):
    return _reduce(builder, acc, 8)


def _iq_args(context, builder, signature, args):
    """(weight bytes at w[o], x bytes at x[xo], grid pointer, sign-table pointer or None) of an IQ
    block intrinsic f(w, o, x, xo, grid[, ksigns])."""
    wb = _bytes(context, builder, signature.args[0], args[0], args[1])
    xp = _bytes(context, builder, signature.args[2], args[2], args[3])
    zero = ir.Constant(args[1].type, 0)
    gp = _ptr(context, builder, signature.args[4], args[4], zero)
    sp = _ptr(context, builder, signature.args[5], args[5], zero) if len(args) > 5 else None
    return wb, xp, gp, sp


def _grid_dot(builder, gv, sx, scales):
    """32 grid bytes (the vector gv) times the signed x: u8 x s8 pair sums times the <16 x i16>
    scales -> <8 x i32> (one 32-value group of an IQ block)."""
    return _maddwd(builder, _maddubs(builder, builder.bitcast(gv, ir.VectorType(_I8, 32)), sx), scales)


def _odd_scale(builder, a1):
    """The 4-bit scale in the top bits of a u32 -> <16 x i16> of 2 s + 1 (IQ2_XXS / IQ3_XXS)."""
    ls = builder.add(builder.shl(builder.lshr(a1, ir.Constant(_I32, 28)), ir.Constant(_I32, 1)), ir.Constant(_I32, 1))
    return _splat16(builder, builder.trunc(ls, _I16))


@intrinsic
def iq4xs_block(typingctx, w, o, x, xo):
    """IQ4_XS block (d:2 scales_h:2 scales_l:4 qs:128 at w[o]) against int8 x[xo:xo+256]:
    sum_ib (ls_ib - 32) sum_l kvalues[q] x (int32)."""
    sig = types.int32(w, o, x, xo)

    def codegen(context, builder, signature, args):
        wb = _bytes(context, builder, signature.args[0], args[0], args[1])
        xp = _bytes(context, builder, signature.args[2], args[2], args[3])
        sh = builder.and_(_i32_at(builder, wb, 0), ir.Constant(_I32, 0xFFFF0000))
        sh = builder.lshr(sh, ir.Constant(_I32, 16))
        acc = None
        for j in range(4):
            b = _load(builder, builder.gep(wb, [ir.Constant(_I32, 8 + 32 * j)]), 32)
            lo = builder.and_(b, _c8(15))
            hi = builder.lshr(b, _c8(4))
            for h, sel in enumerate((list(range(16)) + list(range(32, 48)), list(range(16, 32)) + list(range(48, 64)))):
                ib = 2 * j + h
                wv = _lookup16(builder, KVALUES_IQ4NL_I8, builder.shuffle_vector(lo, hi, _cvec(sel)))
                ls = builder.and_(builder.lshr(_u8_at(builder, wb, 4 + ib // 2), ir.Constant(_I32, 4 * (ib % 2))),
                                  ir.Constant(_I32, 15))
                ls = builder.or_(ls, builder.shl(builder.and_(builder.lshr(sh, ir.Constant(_I32, 2 * ib)),
                                                              ir.Constant(_I32, 3)), ir.Constant(_I32, 4)))
                sc = _splat16(builder, builder.trunc(builder.sub(ls, ir.Constant(_I32, 32)), _I16))
                p = _maddwd(builder, _dot_s8s8(builder, wv, _xload(builder, xp, 32 * ib)), sc)
                acc = p if acc is None else builder.add(acc, p)
        return _finish(builder, acc)
    return sig, codegen


def _xxs_block(n_grid, signs_at):
    """IQ2_XXS / IQ3_XXS blocks: 8 groups of 32 values, each with n_grid grid indices (bytes
    2 + 8 ib ..; grid entries of 32 / n_grid bytes) and a u32 of 4 x 7 sign bits and a 4-bit scale
    at byte signs_at(ib): sum_ib (2 ls_ib + 1) sum grid * sign * x (int32)."""
    def impl(typingctx, w, o, x, xo, grid, ksigns):
        sig = types.int32(w, o, x, xo, grid, ksigns)

        def codegen(context, builder, signature, args):
            wb, xp, gp, sp = _iq_args(context, builder, signature, args)
            vg = ir.VectorType(ir.IntType(256 // n_grid), n_grid)
            acc = None
            for ib in range(8):
                a1 = _i32_at(builder, wb, signs_at(ib))
                gv = ir.Constant(vg, ir.Undefined)
                for k in range(n_grid):
                    g = builder.load(builder.gep(gp, [_u8_at(builder, wb, 2 + 8 * ib + k)]))
                    gv = builder.insert_element(gv, g, ir.Constant(_I32, k))
                sv = _even_signs(builder, sp, [builder.and_(builder.lshr(a1, ir.Constant(_I32, 7 * l)),
                                                            ir.Constant(_I32, 127)) for l in range(4)])
                p = _grid_dot(builder, gv, _sign_apply(builder, _xload(builder, xp, 32 * ib), sv), _odd_scale(builder, a1))
                acc = p if acc is None else builder.add(acc, p)
            return _finish(builder, acc)
        return sig, codegen
    return impl


# iq2xxs_block(w, o, x, xo, grid, ksigns): IQ2_XXS (d:2 then 8 x [4 grid bytes][u32 signs/scale]
# at w[o]) against int8 x[xo:xo+256]; times d/8 gives the dot. grid: uint64 [256] (iq2xxs_grid),
# ksigns: uint64 [128] (keven_signs: bytes of +1/-1).
iq2xxs_block = intrinsic(_xxs_block(4, lambda ib: 6 + 8 * ib))


@intrinsic
def iq3s_block(typingctx, w, o, x, xo, grid):
    """IQ3_S block (d:2 qs:64 qh:8 signs:32 scales:4 at w[o]) against int8 x[xo:xo+256]:
    sum_ib (1 + 2 sc_ib) sum grid * sign * x (int32; times d gives the dot). grid: uint32 [512]."""
    sig = types.int32(w, o, x, xo, grid)

    def codegen(context, builder, signature, args):
        wb, xp, gp, _ = _iq_args(context, builder, signature, args)
        v8 = ir.VectorType(_I32, 8)
        c256 = ir.Constant(_I32, 256)
        acc = None
        for ib in range(8):
            qh = _u8_at(builder, wb, 66 + ib)
            gv = ir.Constant(v8, ir.Undefined)
            for l in range(4):
                for e in range(2):
                    idx = builder.or_(_u8_at(builder, wb, 2 + 8 * ib + 2 * l + e),
                                      builder.and_(builder.shl(qh, ir.Constant(_I32, 8 - 2 * l - e)), c256))
                    gv = builder.insert_element(gv, builder.load(builder.gep(gp, [idx])), ir.Constant(_I32, 2 * l + e))
            sx = _signed_by_bits(builder, _xload(builder, xp, 32 * ib), _i32_at(builder, wb, 74 + 4 * ib))
            sc = builder.and_(builder.lshr(_u8_at(builder, wb, 106 + ib // 2), ir.Constant(_I32, 4 * (ib & 1))),
                              ir.Constant(_I32, 15))
            ls = builder.add(builder.shl(sc, ir.Constant(_I32, 1)), ir.Constant(_I32, 1))
            p = _grid_dot(builder, gv, sx, _splat16(builder, builder.trunc(ls, _I16)))
            acc = p if acc is None else builder.add(acc, p)
        return _finish(builder, acc)
    return sig, codegen


def _blk_iq4_nl(builder, wb, xv):
    wv = _lookup16(builder, KVALUES_IQ4NL_I8, _nib32(builder, builder.gep(wb, [ir.Constant(_I32, 2)])))
    return _maddwd(builder, _dot_s8s8(builder, wv, xv), _ones16(builder))


row_iq4_nl = intrinsic(_row32(_blk_iq4_nl, _SIZE["IQ4_NL"]))

KVALUES_MXFP4_I8 = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)   # doubled e2m1


def _blk_mxfp4(builder, wb, xv):
    wv = _lookup16(builder, KVALUES_MXFP4_I8, _nib32(builder, builder.gep(wb, [ir.Constant(_I32, 1)])))
    return _maddwd(builder, _dot_s8s8(builder, wv, xv), _ones16(builder))


# MXFP4 (e:1 qs:16): IQ4_NL's row with the e2m1 table and the e8m0 scale (ggml_vec_dot_mxfp4_q8_0)
row_mxfp4 = intrinsic(_row32(_blk_mxfp4, _SIZE["MXFP4"], _e8m0_half_scale))


# iq3xxs_block(w, o, x, xo, grid, ksigns): IQ3_XXS (d:2 qs:64 grid indices, 8 x u32 signs/scale
# at w[o]) against int8 x[xo:xo+256]; times d/4 gives the dot. grid: uint32 [256] (iq3xxs_grid).
iq3xxs_block = intrinsic(_xxs_block(8, lambda ib: 66 + 4 * ib))


def _odd_scales16(builder, sc):
    """A scale byte of two 4-bit scales -> <16 x i16>: 2 lo + 1 in lanes 0-7, 2 hi + 1 in 8-15
    (the IQ2_XS / IQ2_S per-16 multipliers, for vpmaddwd after vpmaddubsw)."""
    lo = builder.trunc(builder.add(builder.shl(builder.and_(sc, ir.Constant(_I32, 15)), ir.Constant(_I32, 1)),
                                   ir.Constant(_I32, 1)), _I16)
    hi = builder.trunc(builder.add(builder.shl(builder.lshr(sc, ir.Constant(_I32, 4)), ir.Constant(_I32, 1)),
                                   ir.Constant(_I32, 1)), _I16)
    return builder.shuffle_vector(_splat16(builder, lo, 8), _splat16(builder, hi, 8), _cvec(range(16)))


@intrinsic
def iq2xs_block(typingctx, w, o, x, xo, grid, ksigns):
    """IQ2_XS block (d:2 qs:32 x u16 [9-bit grid | 7-bit signs] scales:8 at w[o]) against int8
    x[xo:xo+256]: sum over 16-groups of (2 s + 1) sum grid * sign * x (int32; times d/8 gives
    the dot). grid: uint64 [512] (iq2xs_grid), ksigns: uint64 [128] (keven_signs: bytes of +1/-1)."""
    sig = types.int32(w, o, x, xo, grid, ksigns)

    def codegen(context, builder, signature, args):
        wb, xp, gp, sp = _iq_args(context, builder, signature, args)
        v4 = ir.VectorType(ir.IntType(64), 4)
        acc = None
        for ib in range(8):
            gv = ir.Constant(v4, ir.Undefined)
            sidx = []
            for l in range(4):
                q = builder.or_(_u8_at(builder, wb, 2 + 8 * ib + 2 * l),
                                builder.shl(_u8_at(builder, wb, 3 + 8 * ib + 2 * l), ir.Constant(_I32, 8)))
                g = builder.load(builder.gep(gp, [builder.and_(q, ir.Constant(_I32, 511))]))
                gv = builder.insert_element(gv, g, ir.Constant(_I32, l))
                sidx.append(builder.lshr(q, ir.Constant(_I32, 9)))
            sv = _even_signs(builder, sp, sidx)
            sx = _sign_apply(builder, _xload(builder, xp, 32 * ib), sv)
            p = _grid_dot(builder, gv, sx, _odd_scales16(builder, _u8_at(builder, wb, 66 + ib)))
            acc = p if acc is None else builder.add(acc, p)
        return _finish(builder, acc)
    return sig, codegen


@intrinsic
def iq2s_block(typingctx, w, o, x, xo, grid):
    """IQ2_S block (d:2 qs:32 signs:32 qh:8 scales:8 at w[o]) against int8 x[xo:xo+256]: sum over
    16-groups of (2 s + 1) sum grid * sign * x (int32; times d/8 gives the dot). The 10-bit grid
    index is qs | (qh >> 2l & 3) << 8; the signs are plain bits (one byte per 8 weights).
    grid: uint64 [1024] (iq2s_grid)."""
    sig = types.int32(w, o, x, xo, grid)

    def codegen(context, builder, signature, args):
        wb, xp, gp, _ = _iq_args(context, builder, signature, args)
        v4 = ir.VectorType(ir.IntType(64), 4)
        acc = None
        for ib in range(8):
            qh = _u8_at(builder, wb, 66 + ib)
            gv = ir.Constant(v4, ir.Undefined)
            for l in range(4):
                idx = builder.or_(_u8_at(builder, wb, 2 + 4 * ib + l),
                                  builder.and_(builder.shl(qh, ir.Constant(_I32, 8 - 2 * l)), ir.Constant(_I32, 0x300)))
                gv = builder.insert_element(gv, builder.load(builder.gep(gp, [idx])), ir.Constant(_I32, l))
            sx = _signed_by_bits(builder, _xload(builder, xp, 32 * ib), _i32_at(builder, wb, 34 + 4 * ib))
            p = _grid_dot(builder, gv, sx, _odd_scales16(builder, _u8_at(builder, wb, 74 + ib)))
            acc = p if acc is None else builder.add(acc, p)
        return _finish(builder, acc)
    return sig, codegen


# ---------------------------------------------------------------- fp16 -> float64 (the f16 KV cache)

@intrinsic
def half_to_f64(typingctx, src, so, dst, n8):
    """dst[i] = float64(fp16 bits src[so + i]) for i < 8 n8 (src: uint16 array of any rank, so its
    flat element offset; dst: 1-D float64). Exact (every fp16 is a float64); vcvtph2ps + vcvtps2pd."""
    sig = types.void(src, so, dst, n8)

    def codegen(context, builder, signature, args):
        v8h = ir.VectorType(ir.IntType(16), 8)
        v8d = ir.VectorType(ir.DoubleType(), 8)
        s0 = _ptr(context, builder, signature.args[0], args[0], args[1])
        d0 = _ptr(context, builder, signature.args[2], args[2], ir.Constant(args[1].type, 0))
        with cgutils.for_range(builder, args[3]) as loop:
            i = builder.mul(loop.index, ir.Constant(loop.index.type, 8))
            hv = builder.load(builder.bitcast(builder.gep(s0, [i]), v8h.as_pointer()), align=2)
            dv = builder.fpext(builder.bitcast(hv, ir.VectorType(ir.HalfType(), 8)), v8d)
            builder.store(dv, builder.bitcast(builder.gep(d0, [i]), v8d.as_pointer()), align=8)
        return context.get_dummy_value()
    return sig, codegen
