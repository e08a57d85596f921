"""Numba fast paths, bit-exact with quant/ref; each module registers its kernels."""
