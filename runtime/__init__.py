"""Inference runtime: memory-mapped GGUF models run on Numba CPU kernels
(and CuPy CUDA kernels). Stands on ``quant``; never imports ``ggufkit``."""
