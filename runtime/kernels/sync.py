"""Work shared inside one parallel region: atomic counters and a bounded-spin wait.

  fetch_add(a, i, v)        atomically a[i] += v on an int64 array; returns the old value (seq_cst)
  atomic_load(a, i)         a[i], read atomically (acquire)
  wait_for(a, i, n, spin)   until atomic_load(a, i) >= n: spin ``spin`` looks, then sched_yield()
                            between looks (a spinning wait collapses when another process holds
                            the core: /work/shared/docs/CPU-THREADS.md)

With them a parallel region runs a sequence of phases whose items any thread may claim
(``fetch_add`` on the phase's claim counter) and mark done (its done counter); a thread finishing
a phase claims what is left and then waits for the phase's done count. No thread waits on
another thread that has not started: if fewer threads than iterations run the region (or one
runs them all in turn), the first to arrive does every item, so there is no deadlock.
"""

from numba import njit, types
from numba.extending import intrinsic

_sched_yield = types.ExternalFunction("sched_yield", types.int32())


def _elem_ptr(context, builder, aty, ary, idx):
    a = context.make_array(aty)(context, builder, ary)
    return builder.gep(a.data, [idx])


@intrinsic
def fetch_add(typingctx, a, i, v):
    """a[i] += v atomically (int64 array a), returning the old a[i]."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None
    sig = types.int64(a, i, v)

    def codegen(context, builder, signature, args):
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", _elem_ptr(context, builder, signature.args[0], args[0], idx), val,
                                  "seq_cst")
    return sig, codegen


@intrinsic
def atomic_load(typingctx, a, i):
    """a[i] read atomically (int64 array a)."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None
    sig = types.int64(a, i)

    def codegen(context, builder, signature, args):
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        return builder.load_atomic(_elem_ptr(context, builder, signature.args[0], args[0], idx), "acquire", 8)
    return sig, codegen


@njit(cache=True)
def wait_for(a, i, n, spin):
    """Until a[i] >= n: ``spin`` busy looks, then a sched_yield() before each further look."""
    k = 0
    while atomic_load(a, i) < n:
        k += 1
        if k > spin:
            _sched_yield()


@njit(cache=True)
def claim(a, i):
    """The next item of the phase whose claim counter is a[i] (0, 1, ...)."""
    return fetch_add(a, i, 1)


@njit(cache=True)
def done(a, i):
    """One more item of the phase whose done counter is a[i] is finished."""
    fetch_add(a, i, 1)
