"""quant's two backends, numpy reference and Numba, checked against each other on one input."""
from __future__ import annotations

import numpy as np

import quant


def numba_equals_numpy(x: np.ndarray, qtype: str, imatrix=None) -> np.ndarray:
    """Quantize x with quant's numpy reference and its Numba kernels (2 threads): equal bytes; then
    dequantize those bytes both ways: equal bits. Returns the reference's dequantized rows."""
    a = quant.quantize(x, qtype, imatrix, backend="numpy")
    b = quant.quantize(x, qtype, imatrix, backend="numba", nthreads=2)
    assert np.array_equal(a, b)
    da = quant.dequantize(a, qtype, backend="numpy")
    db = quant.dequantize(a, qtype, backend="numba")
    assert np.array_equal(da.view(np.uint32), db.view(np.uint32))
    return da
