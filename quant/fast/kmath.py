"""Scalar ports of ggml-quants.c's scale searches for the Numba kernels (one group at a time).

x, w: f32[n] views; L: i32[n] scratch (Laux: see each function). Same results as the C (float32, same order).
"""

from numba import njit

from ._common import F32, JIT, LIM, MAGIC, nearest_int

GROUP_MAX_EPS = F32(1e-15)


@njit(**JIT)
def _make_qx_checked(n, nmax, x, L, rmse_type, w):
    """make_qx_quants line for line, with the checked nearest_int (any input)."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / mx
    if rmse_type == 0:
        for i in range(n):
            l = nearest_int(iscale * x[i])
            L[i] = nmax + max(-nmax, min(nmax - 1, l))
        return F32(1.0) / iscale
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = max(-nmax, min(nmax - 1, l))
        L[i] = l + nmax
        fl = F32(l)
        sumlx += w[i] * x[i] * fl
        suml2 += w[i] * fl * fl
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(is_)) / mx
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale * x[i])
            l = max(-nmax, min(nmax - 1, l))
            fl = F32(l)
            sumlx += w[i] * x[i] * fl
            suml2 += w[i] * fl * fl
        if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
            for i in range(n):
                l = nearest_int(iscale * x[i])
                L[i] = nmax + max(-nmax, min(nmax - 1, l))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(**JIT)
def make_qx_quants(n, nmax, x, L, rmse_type, w):
    """w: the weights (qw, or x*x for rmse_type 1 without qw). L gets values in [0, 2*nmax-1].

    Fast path when every trial |iscale*x[i]| <= 2^22 (always, for finite x): nearest_int(v)
    is then exactly (v + 12582912.f) - 12582912.f, and the 18 trial scales (independent until
    their comparison) are summed three at a time - three float32 chains, each in C order -
    and compared in C's order. Otherwise the line-for-line port runs."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS or rmse_type <= 0:
        return _make_qx_checked(n, nmax, x, L, rmse_type, w)
    for is_ in range(-9, 10):
        if not (abs(-(F32(nmax) + F32(0.1) * F32(is_)) / mx) * amax <= LIM):
            return _make_qx_checked(n, nmax, x, L, rmse_type, w)
    lo = F32(-nmax)
    hi = F32(nmax - 1)
    iscale = F32(-nmax) / mx
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        fl = (iscale * x[i] + MAGIC) - MAGIC
        fl = max(lo, min(hi, fl))
        L[i] = int(fl) + nmax
        sumlx += w[i] * x[i] * fl
        suml2 += w[i] * fl * fl
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    for g in range(6):
        i0 = 3 * g - 9 if g < 3 else 3 * g - 8                 # -9 -6 -3 1 4 7
        isa = -(F32(nmax) + F32(0.1) * F32(i0)) / mx
        isb = -(F32(nmax) + F32(0.1) * F32(i0 + 1)) / mx
        isc = -(F32(nmax) + F32(0.1) * F32(i0 + 2)) / mx
        sa = F32(0.0)
        qa = F32(0.0)
        sb = F32(0.0)
        qb = F32(0.0)
        sc = F32(0.0)
        qc = F32(0.0)
        for i in range(n):
            xi = x[i]
            wi = w[i]
            wx = wi * xi
            fa = (isa * xi + MAGIC) - MAGIC
            fa = max(lo, min(hi, fa))
            fb = (isb * xi + MAGIC) - MAGIC
            fb = max(lo, min(hi, fb))
            fc = (isc * xi + MAGIC) - MAGIC
            fc = max(lo, min(hi, fc))
            sa += wx * fa
            qa += wi * fa * fa
            sb += wx * fb
            qb += wi * fb * fb
            sc += wx * fc
            qc += wi * fc * fc
        for (iscale, sumlx, suml2) in ((isa, sa, qa), (isb, sb, qb), (isc, sc, qc)):
            if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
                for i in range(n):
                    fl = (iscale * x[i] + MAGIC) - MAGIC
                    fl = max(lo, min(hi, fl))
                    L[i] = int(fl) + nmax
                scale = sumlx / suml2
                best = scale * sumlx
    return scale


@njit(**JIT)
def make_q3_quants(n, nmax, x, L, do_rmse):
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / mx
    if do_rmse:
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale * x[i])
            l = max(-nmax, min(nmax - 1, l))
            L[i] = l
            w = x[i] * x[i]
            fl = F32(l)
            sumlx += w * x[i] * fl
            suml2 += w * fl * fl
        for itry in range(5):
            n_changed = 0
            for i in range(n):
                w = x[i] * x[i]
                fL = F32(L[i])
                slx = sumlx - w * x[i] * fL
                if slx > F32(0.0):
                    sl2 = suml2 - w * fL * fL
                    new_l = nearest_int(x[i] * sl2 / slx)
                    new_l = max(-nmax, min(nmax - 1, new_l))
                    if new_l != L[i]:
                        fn = F32(new_l)
                        slx += w * x[i] * fn
                        sl2 += w * fn * fn
                        if sl2 > F32(0.0) and slx * slx * suml2 > sumlx * sumlx * sl2:
                            L[i] = new_l
                            sumlx = slx
                            suml2 = sl2
                            n_changed += 1
            if n_changed == 0:
                break
        for i in range(n):
            L[i] += nmax
        return sumlx / suml2 if suml2 > F32(0.0) else F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = max(-nmax, min(nmax - 1, l))
        L[i] = l + nmax
    return F32(1.0) / iscale


@njit(**JIT)
def make_qkx(n, nmax, x, w, L, Laux, rmin, rdelta, nstep, use_mad, x3, the_min):
    """make_qkx2_quants (x3=False) / make_qkx3_quants (x3=True). the_min: f32[1] out (= -min).
    Laux: f32[>= 3n] scratch."""
    mn = x[0]
    mx = x[0]
    xmin = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        sum_w += w[i]
        sum_x += w[i] * x[i]
    xmin = mn
    if mn > F32(0.0):
        mn = F32(0.0)
    if (mx <= mn) if x3 else (mx == mn):
        for i in range(n):
            L[i] = 0
        the_min[0] = -mn
        return F32(0.0)
    iscale = F32(nmax) / (mx - mn)
    scale = F32(1.0) / iscale
    best = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * (x[i] - mn))
        L[i] = max(0, min(nmax, l))
        diff = scale * F32(L[i]) + mn - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best += w[i] * diff
    if nstep < 1:
        the_min[0] = -mn
        return scale
    # Software pipeline over the trial steps: the error sum of step k and the three sums of
    # step k+1 run in one loop (four independent float32 chains, each in C's order). Step
    # k+1's sums assume mn is unchanged; if step k is accepted with a new min they are redone.
    # While |iscale*(x - mn)| <= 2^22 (checked at both ends; the map is monotone in x),
    # nearest_int(v) is exactly (v + 12582912.f) - 12582912.f, clamped in float; those
    # rounded quants go to scratch (Laux[n:2n], Laux[2n:3n]) in a vectorizable loop. Any step
    # failing the check, and all after it, run the line-for-line port.
    fmax = F32(nmax)
    zero = F32(0.0)
    fa = Laux[n:2 * n]
    fb = Laux[2 * n:3 * n]
    k = 0
    isk = (rmin + rdelta * F32(0) + fmax) / (mx - mn)
    fast = _qkx_ok(isk, xmin, mx, mn)
    if fast:
        _qkx_round(n, x, isk, mn, fmax, fa)
        sl, sl2, sxl = _qkx_sums(n, x, w, fa)
    while fast and k <= nstep:
        D = sum_w * sl2 - sl * sl
        ts = (sum_w * sxl - sum_x * sl) / D
        tm = (sl2 * sum_x - sl * sxl) / D
        if tm > zero:
            tm = zero
            ts = sxl / sl2
        isn = (rmin + rdelta * F32(k + 1) + fmax) / (mx - mn)
        nxt = k + 1 <= nstep and _qkx_ok(isn, xmin, mx, mn)
        cur = zero
        nl = zero
        nl2 = zero
        nxl = zero
        if nxt:
            _qkx_round(n, x, isn, mn, fmax, fb)
            if use_mad:
                for i in range(n):
                    xi = x[i]
                    wi = w[i]
                    d = ts * fa[i] + tm - xi
                    cur += wi * abs(d)
                    g = fb[i]
                    wg = wi * g
                    nl += wg
                    nl2 += wg * g
                    nxl += wg * xi
            else:
                for i in range(n):
                    xi = x[i]
                    wi = w[i]
                    d = ts * fa[i] + tm - xi
                    cur += wi * (d * d)
                    g = fb[i]
                    wg = wi * g
                    nl += wg
                    nl2 += wg * g
                    nxl += wg * xi
        else:
            for i in range(n):
                d = ts * fa[i] + tm - x[i]
                cur += w[i] * (abs(d) if use_mad else d * d)
        if D > zero and cur < best:
            for i in range(n):
                L[i] = int(fa[i])
            best = cur
            scale = ts
            changed = tm != mn          # -0.0 vs 0.0 changes no sum, but C keeps this_min
            mn = tm
            if changed:
                if nxt:
                    isn = (rmin + rdelta * F32(k + 1) + fmax) / (mx - mn)
                    nxt = _qkx_ok(isn, xmin, mx, mn)
                    if nxt:
                        _qkx_round(n, x, isn, mn, fmax, fb)
                        nl, nl2, nxl = _qkx_sums(n, x, w, fb)
        k += 1
        fast = nxt
        isk = isn
        sl = nl
        sl2 = nl2
        sxl = nxl
        fa, fb = fb, fa
    while k <= nstep:
        iscale = (rmin + rdelta * F32(k) + fmax) / (mx - mn)
        best, scale, mn = _qkx_step_checked(n, nmax, x, w, L, Laux, iscale, sum_w, sum_x, mn,
                                            best, scale, use_mad)
        k += 1
    the_min[0] = -mn
    return scale


@njit(inline="always", **JIT)
def _qkx_round(n, x, iscale, mn, fmax, out):
    """out[i] = clamp(nearest_int(iscale*(x[i] - mn)), 0, nmax) as float (range checked)."""
    for i in range(n):
        f = (iscale * (x[i] - mn) + MAGIC) - MAGIC
        out[i] = max(F32(0.0), min(fmax, f))


@njit(inline="always", **JIT)
def _qkx_ok(iscale, xmin, mx, mn):
    lo = iscale * (xmin - mn)
    hi = iscale * (mx - mn)
    return lo >= -LIM and lo <= LIM and hi >= -LIM and hi <= LIM


@njit(inline="always", **JIT)
def _qkx_sums(n, x, w, f):
    """sum_l, sum_l2, sum_xl of one trial step from its rounded quants f."""
    sl = F32(0.0)
    sl2 = F32(0.0)
    sxl = F32(0.0)
    for i in range(n):
        g = f[i]
        wg = w[i] * g
        sl += wg
        sl2 += wg * g
        sxl += wg * x[i]
    return sl, sl2, sxl


@njit(**JIT)
def _qkx_step_checked(n, nmax, x, w, L, Laux, iscale, sum_w, sum_x, mn, best, scale, use_mad):
    """One trial step of make_qkx2/3_quants, line for line (any input). -> (best, scale, min)"""
    sum_l = F32(0.0)
    sum_l2 = F32(0.0)
    sum_xl = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * (x[i] - mn))
        l = max(0, min(nmax, l))
        Laux[i] = F32(l)
        fl = F32(l)
        sum_l += w[i] * fl
        sum_l2 += w[i] * fl * fl
        sum_xl += w[i] * fl * x[i]
    D = sum_w * sum_l2 - sum_l * sum_l
    if D > F32(0.0):
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        if this_min > F32(0.0):
            this_min = F32(0.0)
            this_scale = sum_xl / sum_l2
        cur = F32(0.0)
        for i in range(n):
            diff = this_scale * Laux[i] + this_min - x[i]
            diff = abs(diff) if use_mad else diff * diff
            cur += w[i] * diff
        if cur < best:
            for i in range(n):
                L[i] = int(Laux[i])
            best = cur
            scale = this_scale
            mn = this_min
    return best, scale, mn


@njit(**JIT)
def make_qp_quants(n, nmax, x, L, qw):
    """ggml make_qp_quants (K-quant scales and IQ2_S/IQ3 sub-block scales). ggml's L is
    uint8_t: negative levels wrap (& 255), and later comparisons see the wrapped value."""
    mx = F32(0.0)
    for i in range(n):
        mx = mx if mx > x[i] else x[i]
    if mx < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(nmax) / mx
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 255
    scale = F32(1.0) / iscale
    best_mse = F32(0.0)
    for i in range(n):
        diff = x[i] - scale * F32(L[i])
        best_mse += qw[i] * diff * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (F32(0.1) * F32(is_) + F32(nmax)) / mx
        scale_is = F32(1.0) / iscale_is
        mse = F32(0.0)
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * F32(l)
            mse += qw[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 255
        fl = F32(l)
        sumlx += qw[i] * x[i] * fl
        suml2 += qw[i] * fl * fl
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            fL = F32(L[i])
            slx = sumlx - w * x[i] * fL
            sl2 = suml2 - w * fL * fL
            if slx > F32(0.0) and sl2 > F32(0.0):
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    fn = F32(new_l)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 255
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > F32(0.0) else F32(0.0)
