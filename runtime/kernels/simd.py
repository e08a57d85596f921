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
All return int32. w may be any 1-D uint8/int8 array, x an int8 array; offsets are
element indices (no bounds check: callers stay inside the block).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)


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
