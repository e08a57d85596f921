"""ggml quantization formats: one type table, numpy references, Numba fast paths,
and tensor-type recipes. This package is the floor: it imports neither ggufkit nor runtime."""
