"""ggml-quants.c's scale search helpers (make_qx_quants, make_q3_quants, make_qkx2_quants,
make_qkx3_quants, make_qp_quants), vectorized across blocks.

Every function takes x: f32[nb, n] (nb independent groups) and loops over the in-group index
explicitly, so each sum is accumulated in the same order as the C code, in float32. Masks
replace the C early returns and ``if`` updates. Integer quants are int32 arrays.
"""

import numpy as np

from ._util import F32, nearest_int

GROUP_MAX_EPS = F32(1e-15)


def _f(a):
    return np.asarray(a, np.float32)


def _first_absmax(x):
    """C: for i: if (fabsf(x[i]) > amax) { amax = fabsf(x[i]); max = x[i]; } with amax = max = 0."""
    a = np.abs(x)
    a = np.where(a != a, F32(-1), a)          # NaN never wins `ax > amax` in C
    idx = np.argmax(a, axis=1)
    amax = np.maximum(np.take_along_axis(a, idx[:, None], 1)[:, 0], F32(0))
    mx = np.where(amax > 0, np.take_along_axis(x, idx[:, None], 1)[:, 0], F32(0)).astype(np.float32)
    return amax, mx


def _first_min_max(x):
    """C: min = max = x[0]; for i >= 1: if (x[i] < min) min = x[i]; if (x[i] > max) max = x[i]."""
    mn = np.take_along_axis(x, np.argmin(x, axis=1)[:, None], 1)[:, 0]
    mx = np.take_along_axis(x, np.argmax(x, axis=1)[:, None], 1)[:, 0]
    return mn.astype(np.float32), mx.astype(np.float32)


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (_f(a) / _f(b)).astype(np.float32)


def make_qx_quants(x, nmax, qw=None, rmse_type=1):
    """-> (scale f32[nb], L i32[nb, n]) with L in [0, 2*nmax-1]."""
    x = _f(x)
    nb, n = x.shape
    amax, mx = _first_absmax(x)
    zero = amax < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = _div(F32(-nmax), mx)
        if rmse_type == 0:
            L = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1) + nmax
            return (np.where(zero, F32(0), _div(F32(1), iscale)).astype(np.float32),
                    np.where(zero[:, None], 0, L).astype(np.int32))
        return_early = rmse_type < 0
        rmse_type = abs(rmse_type)
        if qw is not None:
            w = _f(qw)
        elif rmse_type == 1:
            w = x * x
        elif rmse_type == 2:
            w = np.ones_like(x)
        elif rmse_type == 3:
            w = np.abs(x)
        else:
            w = np.sqrt(np.abs(x))

        def sums(isc):
            l = np.clip(nearest_int(isc[:, None] * x), -nmax, nmax - 1)
            lf = l.astype(np.float32)
            sumlx = np.zeros(nb, np.float32)
            suml2 = np.zeros(nb, np.float32)
            for i in range(n):
                sumlx += w[:, i] * x[:, i] * lf[:, i]
                suml2 += w[:, i] * lf[:, i] * lf[:, i]
            return l, sumlx, suml2

        l, sumlx, suml2 = sums(iscale)
        L = l + nmax
        scale = np.where(suml2 != 0, _div(sumlx, suml2), F32(0)).astype(np.float32)
        if return_early:
            r = np.where(suml2 > 0, F32(0.5) * (scale + _div(F32(1), iscale)), _div(F32(1), iscale))
            return (np.where(zero, F32(0), r).astype(np.float32),
                    np.where(zero[:, None], 0, L).astype(np.int32))
        best = scale * sumlx
        for is_ in range(-9, 10):
            if is_ == 0:
                continue
            isc = _div(-(F32(nmax) + F32(0.1) * F32(is_)), mx)
            l, sumlx, suml2 = sums(isc)
            upd = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(upd[:, None], l + nmax, L)
            scale = np.where(upd, _div(sumlx, suml2), scale).astype(np.float32)
            best = np.where(upd, scale * sumlx, best).astype(np.float32)
    return (np.where(zero, F32(0), scale).astype(np.float32),
            np.where(zero[:, None], 0, L).astype(np.int32))


def make_q3_quants(x, nmax, do_rmse):
    """-> (scale f32[nb], L i32[nb, n]) with L in [0, 2*nmax-1]."""
    x = _f(x)
    nb, n = x.shape
    amax, mx = _first_absmax(x)
    zero = amax < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = _div(F32(-nmax), mx)
        l = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1).astype(np.int32)
        if not do_rmse:
            return (np.where(zero, F32(0), _div(F32(1), iscale)).astype(np.float32),
                    np.where(zero[:, None], 0, l + nmax).astype(np.int32))
        w = x * x
        sumlx = np.zeros(nb, np.float32)
        suml2 = np.zeros(nb, np.float32)
        for i in range(n):
            lf = l[:, i].astype(np.float32)
            sumlx += w[:, i] * x[:, i] * lf
            suml2 += w[:, i] * lf * lf
        active = ~zero
        for _ in range(5):
            changed = np.zeros(nb, bool)
            for i in range(n):
                wi, xi = w[:, i], x[:, i]
                li = l[:, i].astype(np.float32)
                slx = sumlx - wi * xi * li
                ok = active & (slx > 0)
                sl2 = suml2 - wi * li * li
                new_l = np.clip(nearest_int(_div(xi * sl2, slx)), -nmax, nmax - 1).astype(np.int32)
                ok &= new_l != l[:, i]
                nf = new_l.astype(np.float32)
                slx = slx + wi * xi * nf
                sl2 = sl2 + wi * nf * nf
                ok &= (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
                l[:, i] = np.where(ok, new_l, l[:, i])
                sumlx = np.where(ok, slx, sumlx).astype(np.float32)
                suml2 = np.where(ok, sl2, suml2).astype(np.float32)
                changed |= ok
            active &= changed
            if not active.any():
                break
        scale = np.where(suml2 > 0, _div(sumlx, suml2), F32(0)).astype(np.float32)
    return (np.where(zero, F32(0), scale).astype(np.float32),
            np.where(zero[:, None], 0, l + nmax).astype(np.int32))


def _make_qkx(x, nmax, w, rmin, rdelta, nstep, use_mad, x3):
    """Shared body of make_qkx2_quants (x3=False) and make_qkx3_quants (x3=True).

    -> (scale f32[nb], the_min f32[nb] (= -min), L i32[nb, n])."""
    x = _f(x)
    w = _f(w)
    nb, n = x.shape
    mn, mx = _first_min_max(x)
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        sum_w += w[:, i]
        sum_x += w[:, i] * x[:, i]
    mn = np.where(mn > 0, F32(0), mn).astype(np.float32)
    flat = (mx <= mn) if x3 else (mx == mn)
    rmin, rdelta = F32(rmin), F32(rdelta)
    with np.errstate(all="ignore"):
        rng = mx - mn
        iscale = _div(F32(nmax), rng)
        scale = _div(F32(1), iscale)
        L = np.clip(nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(np.int32)
        best = np.zeros(nb, np.float32)
        for i in range(n):
            diff = scale * L[:, i].astype(np.float32) + mn - x[:, i]
            diff = np.abs(diff) if use_mad else diff * diff
            best += w[:, i] * diff
        for is_ in range(nstep + 1 if nstep >= 1 else 0):
            isc = _div(rmin + rdelta * F32(is_) + F32(nmax), mx - mn)   # min changes as we go
            la = np.clip(nearest_int(isc[:, None] * (x - mn[:, None])), 0, nmax).astype(np.int32)
            sum_l = np.zeros(nb, np.float32)
            sum_l2 = np.zeros(nb, np.float32)
            sum_xl = np.zeros(nb, np.float32)
            for i in range(n):
                lf = la[:, i].astype(np.float32)
                wi = w[:, i]
                sum_l += wi * lf
                sum_l2 += wi * lf * lf
                sum_xl += wi * lf * x[:, i]
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = _div(sum_w * sum_xl - sum_x * sum_l, D)
            this_min = _div(sum_l2 * sum_x - sum_l * sum_xl, D)
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min).astype(np.float32)
            this_scale = np.where(pos, _div(sum_xl, sum_l2), this_scale).astype(np.float32)
            cur = np.zeros(nb, np.float32)
            for i in range(n):
                diff = this_scale * la[:, i].astype(np.float32) + this_min - x[:, i]
                diff = np.abs(diff) if use_mad else diff * diff
                cur += w[:, i] * diff
            upd = (D > 0) & (cur < best) & ~flat
            L = np.where(upd[:, None], la, L)
            best = np.where(upd, cur, best).astype(np.float32)
            scale = np.where(upd, this_scale, scale).astype(np.float32)
            mn = np.where(upd, this_min, mn).astype(np.float32)
    scale = np.where(flat, F32(0), scale).astype(np.float32)
    L = np.where(flat[:, None], 0, L).astype(np.int32)
    return scale, (-mn).astype(np.float32), L


def make_qkx2_quants(x, nmax, w, rmin, rdelta, nstep, use_mad):
    return _make_qkx(x, nmax, w, rmin, rdelta, nstep, use_mad, x3=False)


def make_qkx3_quants(x, nmax, w, rmin, rdelta, nstep, use_mad):
    """w None -> x*x weights. Returns (scale, the_min, L)."""
    x = _f(x)
    if w is None:
        w = x * x
    return _make_qkx(x, nmax, w, rmin, rdelta, nstep, use_mad, x3=True)


def make_qp_quants(x, nmax, qw):
    """x >= 0 (scales); -> (scale f32[nb], L i32[nb, n]) with L in [0, nmax]."""
    x = _f(x)
    qw = _f(qw)
    nb, n = x.shape
    mx = np.zeros(nb, np.float32)
    for i in range(n):
        mx = np.where(mx > x[:, i], mx, x[:, i]).astype(np.float32)     # MAX(max, x[i])
    zero = mx < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = _div(F32(nmax), mx)
        L = nearest_int(iscale[:, None] * x)
        scale = _div(F32(1), iscale)
        best = np.zeros(nb, np.float32)
        for i in range(n):
            diff = x[:, i] - scale * L[:, i].astype(np.float32)
            best += qw[:, i] * diff * diff
        for is_ in range(-4, 5):
            if is_ == 0:
                continue
            isc = _div(F32(0.1) * F32(is_) + F32(nmax), mx)
            sc = _div(F32(1), isc)
            l = np.minimum(nmax, nearest_int(isc[:, None] * x))
            mse = np.zeros(nb, np.float32)
            for i in range(n):
                diff = x[:, i] - sc * l[:, i].astype(np.float32)
                mse += qw[:, i] * diff * diff
            upd = mse < best
            best = np.where(upd, mse, best).astype(np.float32)
            iscale = np.where(upd, isc, iscale).astype(np.float32)
        l = np.minimum(nmax, nearest_int(iscale[:, None] * x)).astype(np.int32)
        sumlx = np.zeros(nb, np.float32)
        suml2 = np.zeros(nb, np.float32)
        for i in range(n):
            lf = l[:, i].astype(np.float32)
            sumlx += qw[:, i] * x[:, i] * lf
            suml2 += qw[:, i] * lf * lf
        active = ~zero
        for _ in range(5):
            changed = np.zeros(nb, bool)
            for i in range(n):
                wi, xi = qw[:, i], x[:, i]
                li = l[:, i].astype(np.float32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                ok = active & (slx > 0) & (sl2 > 0)
                new_l = np.minimum(nmax, nearest_int(_div(xi * sl2, slx))).astype(np.int32)
                ok &= new_l != l[:, i]
                nf = new_l.astype(np.float32)
                slx = slx + wi * xi * nf
                sl2 = sl2 + wi * nf * nf
                ok &= slx * slx * suml2 > sumlx * sumlx * sl2
                l[:, i] = np.where(ok, new_l, l[:, i])
                sumlx = np.where(ok, slx, sumlx).astype(np.float32)
                suml2 = np.where(ok, sl2, suml2).astype(np.float32)
                changed |= ok
            active &= changed
            if not active.any():
                break
        scale = np.where(suml2 > 0, _div(sumlx, suml2), F32(0)).astype(np.float32)
    return (np.where(zero, F32(0), scale).astype(np.float32),
            np.where(zero[:, None], 0, l).astype(np.int32))
