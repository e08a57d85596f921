"""Small SIMD building blocks written as LLVM vector IR (``numba.extending.intrinsic``).

Numba types every integer product as int64, which keeps LLVM from using the
int8/int16 multiply-adds ggml relies on. These intrinsics load a fixed number of
bytes as one LLVM vector, widen, multiply and reduce; LLVM lowers them to
vpmovsxbw + vpmaddwd (AVX2 / AVX-512) on x86. Each one is a plain dot product,
and the kernels using them are tested against the numpy references.

dot_s8_32(w, wo, x, xo):          sum_{j<32} int8 w[wo+j] * int8 x[xo+j]
dot_u_32(w, wo, sh, m, x, xo):    sum_{j<32} ((uint8 w[wo+j] >> sh) & m) * int8 x[xo+j]
dot_u_16(w, wo, sh, m, x, xo):    the same over 16 lanes
dot_bits_32(qh, x, xo):           sum_{j<32} ((uint32 qh >> j) & 1) * int8 x[xo+j]
sum_s8_16(x, xo):                 sum_{j<16} int8 x[xo+j]
dot_q4_0_block, dot_q5_0_block, dot_k4_64, dot_k5_64, dot_q6_32: whole-block versions
(one reduction per block / chunk, scales applied in-vector), see their docstrings.
All return int32. w may be any 1-D uint8/int8 array, x an int8 array; offsets are
element indices (no bounds check: callers stay inside the block).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()


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


@intrinsic
def dot_s8_32(typingctx, w, wo, x, xo):
    sig = types.int32(w, wo, x, xo)

    def codegen(context, builder, signature, args):
        n = 32
        vty = ir.VectorType(_I32, n)
        a = builder.sext(_load(builder, _ptr(context, builder, signature.args[0], args[0], args[1]), n), vty)
        b = builder.sext(_load(builder, _ptr(context, builder, signature.args[2], args[2], args[3]), n), vty)
        return _reduce(builder, builder.mul(a, b), n)
    return sig, codegen


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
dot_u_16 = intrinsic(_dot_u(16))


@intrinsic
def dot_bits_32(typingctx, qh, x, xo):
    sig = types.int32(qh, x, xo)

    def codegen(context, builder, signature, args):
        n = 32
        vty = ir.VectorType(_I32, n)
        q = _splat(builder, builder.trunc(args[0], _I32) if args[0].type.width > 32
                   else builder.zext(args[0], _I32) if args[0].type.width < 32 else args[0], n)
        bits = builder.and_(builder.lshr(q, ir.Constant(vty, list(range(n)))), ir.Constant(vty, [1] * n))
        b = builder.sext(_load(builder, _ptr(context, builder, signature.args[1], args[1], args[2]), n), vty)
        return _reduce(builder, builder.mul(bits, b), n)
    return sig, codegen


@intrinsic
def sum_s8_16(typingctx, x, xo):
    sig = types.int32(x, xo)

    def codegen(context, builder, signature, args):
        n = 16
        vty = ir.VectorType(_I32, n)
        b = builder.sext(_load(builder, _ptr(context, builder, signature.args[0], args[0], args[1]), n), vty)
        return _reduce(builder, b, n)
    return sig, codegen


# ---------------------------------------------------------------- fused block dot products

def _lanes(builder, w_ptr, n):
    """n bytes at w_ptr, zero-extended to <n x i32>."""
    return builder.zext(_load(builder, w_ptr, n), ir.VectorType(_I32, n))


def _cvec(values):
    return ir.Constant(ir.VectorType(_I32, len(values)), list(values))


def _nibbles_32(builder, w_ptr):
    """16 bytes -> <32 x i32>: low nibbles in lanes 0..15, high nibbles in lanes 16..31."""
    b = _lanes(builder, w_ptr, 16)
    lo = builder.and_(b, _cvec([15] * 16))
    hi = builder.lshr(b, _cvec([4] * 16))
    return builder.shuffle_vector(lo, hi, _cvec(range(32)))


def _x32(context, builder, aty, ary, off, n=32):
    return builder.sext(_load(builder, _ptr(context, builder, aty, ary, off), n), ir.VectorType(_I32, n))


@intrinsic
def dot_q4_0_block(typingctx, w, wo, x, xo):
    """sum_{j<32} (q_j - 8) x_j for one Q4_0 block's 16 quant bytes at w[wo]."""
    sig = types.int32(w, wo, x, xo)

    def codegen(context, builder, signature, args):
        q = builder.sub(_nibbles_32(builder, _ptr(context, builder, signature.args[0], args[0], args[1])),
                        _cvec([8] * 32))
        xv = _x32(context, builder, signature.args[2], args[2], args[3])
        return _reduce(builder, builder.mul(q, xv), 32)
    return sig, codegen


@intrinsic
def dot_q5_0_block(typingctx, w, wo, qh, x, xo):
    """sum_{j<32} (q_j - 16) x_j, q_j = nibble | bit j of qh << 4 (Q5_0 quants at w[wo])."""
    sig = types.int32(w, wo, qh, x, xo)

    def codegen(context, builder, signature, args):
        q = _nibbles_32(builder, _ptr(context, builder, signature.args[0], args[0], args[1]))
        h = args[2]
        h = builder.trunc(h, _I32) if h.type.width > 32 else builder.zext(h, _I32) if h.type.width < 32 else h
        hb = builder.and_(builder.lshr(_splat(builder, h, 32), _cvec(range(32))), _cvec([1] * 32))
        q = builder.sub(builder.or_(q, builder.shl(hb, _cvec([4] * 32))), _cvec([16] * 32))
        xv = _x32(context, builder, signature.args[3], args[3], args[4])
        return _reduce(builder, builder.mul(q, xv), 32)
    return sig, codegen


def _i32(builder, v):
    return builder.trunc(v, _I32) if v.type.width > 32 else builder.sext(v, _I32) if v.type.width < 32 else v


def _dot_k_64(with_h):
    def impl(typingctx, w, wo, qh, qho, hsh, sc1, sc2, x, xo):
        sig = types.int32(w, wo, qh, qho, hsh, sc1, sc2, x, xo)

        def codegen(context, builder, signature, args):
            b = _lanes(builder, _ptr(context, builder, signature.args[0], args[0], args[1]), 32)
            lo = builder.and_(b, _cvec([15] * 32))
            hi = builder.lshr(b, _cvec([4] * 32))
            if with_h:
                hb = _lanes(builder, _ptr(context, builder, signature.args[2], args[2], args[3]), 32)
                shv = _splat(builder, _i32(builder, args[4]), 32)
                h0 = builder.and_(builder.lshr(hb, shv), _cvec([1] * 32))
                h1 = builder.and_(builder.lshr(hb, builder.add(shv, _cvec([1] * 32))), _cvec([1] * 32))
                lo = builder.or_(lo, builder.shl(h0, _cvec([4] * 32)))
                hi = builder.or_(hi, builder.shl(h1, _cvec([4] * 32)))
            x0 = _x32(context, builder, signature.args[7], args[7], args[8])
            x1 = _x32(context, builder, signature.args[7], args[7],
                      builder.add(args[8], ir.Constant(args[8].type, 32)))
            s = builder.add(builder.mul(builder.mul(lo, x0), _splat(builder, _i32(builder, args[5]), 32)),
                            builder.mul(builder.mul(hi, x1), _splat(builder, _i32(builder, args[6]), 32)))
            return _reduce(builder, s, 32)
        return sig, codegen
    return impl


# Q4_K / Q5_K 64-value chunk: sum_{l<32} sc1 q_lo(l) x[xo+l] + sc2 q_hi(l) x[xo+32+l] with
# q_lo = w[wo+l] & 15, q_hi = w[wo+l] >> 4, and for Q5_K bit hsh / hsh+1 of qh[qho+l] as bit 4.
dot_k4_64 = intrinsic(_dot_k_64(False))
dot_k5_64 = intrinsic(_dot_k_64(True))


@intrinsic
def dot_q6_32(typingctx, w, qlo, qho, shl_, shh, sca, scb, x, xo):
    """Q6_K 32 lanes: q = ((w[qlo+l] >> shl_) & 15 | ((w[qho+l] >> shh) & 3) << 4) - 32,
    sum_l (l < 16 ? sca : scb) * q * x[xo+l]."""
    sig = types.int32(w, qlo, qho, shl_, shh, sca, scb, x, xo)

    def codegen(context, builder, signature, args):
        wt = signature.args[0]
        ql = _lanes(builder, _ptr(context, builder, wt, args[0], args[1]), 32)
        qh = _lanes(builder, _ptr(context, builder, wt, args[0], args[2]), 32)
        ql = builder.and_(builder.lshr(ql, _splat(builder, _i32(builder, args[3]), 32)), _cvec([15] * 32))
        qh = builder.and_(builder.lshr(qh, _splat(builder, _i32(builder, args[4]), 32)), _cvec([3] * 32))
        q = builder.sub(builder.or_(ql, builder.shl(qh, _cvec([4] * 32))), _cvec([32] * 32))
        sa = _splat(builder, _i32(builder, args[5]), 16)
        sb = _splat(builder, _i32(builder, args[6]), 16)
        sc = builder.shuffle_vector(sa, sb, _cvec(range(32)))
        # |q sc| <= 32 * 128 fits int16: say so (trunc + sext), so LLVM can use vpmaddwd
        v16 = ir.VectorType(ir.IntType(16), 32)
        qs = builder.sext(builder.trunc(builder.mul(q, sc), v16), ir.VectorType(_I32, 32))
        xv = _x32(context, builder, signature.args[7], args[7], args[8])
        return _reduce(builder, builder.mul(qs, xv), 32)
    return sig, codegen



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


def _dot_k23_32(with_h):
    def impl(typingctx, w, qo, shq, ho, shh, sca, scb, x, xo):
        sig = types.int32(w, qo, shq, ho, shh, sca, scb, x, xo)

        def codegen(context, builder, signature, args):
            wt = signature.args[0]
            q = _lanes(builder, _ptr(context, builder, wt, args[0], args[1]), 32)
            q = builder.and_(builder.lshr(q, _splat(builder, _i32(builder, args[2]), 32)), _cvec([3] * 32))
            if with_h:
                h = _lanes(builder, _ptr(context, builder, wt, args[0], args[3]), 32)
                h = builder.and_(builder.lshr(h, _splat(builder, _i32(builder, args[4]), 32)), _cvec([1] * 32))
                q = builder.sub(builder.or_(q, builder.shl(h, _cvec([2] * 32))), _cvec([4] * 32))
            sc = builder.shuffle_vector(_splat(builder, _i32(builder, args[5]), 16),
                                        _splat(builder, _i32(builder, args[6]), 16), _cvec(range(32)))
            v16 = ir.VectorType(ir.IntType(16), 32)
            qs = builder.sext(builder.trunc(builder.mul(q, sc), v16), ir.VectorType(_I32, 32))
            xv = _x32(context, builder, signature.args[7], args[7], args[8])
            return _reduce(builder, builder.mul(qs, xv), 32)
        return sig, codegen
    return impl


# Q2_K / Q3_K 32 lanes (two 16-groups with scales sca, scb; |q sc| fits int16):
#   Q2_K: q = (w[qo+l] >> shq) & 3
#   Q3_K: q = ((w[qo+l] >> shq) & 3) + 4 ((w[ho+l] >> shh) & 1) - 4
dot_q2_32 = intrinsic(_dot_k23_32(False))
dot_q3_32 = intrinsic(_dot_k23_32(True))
