#!/usr/bin/env python3
"""Print the NVRTC compile table (registers, shared memory, stack, spills) for every
runtime/cuda/*.cu at each checked arch, as recorded in docs/CUDA.md.

    python -m tools.conformance.cuda_compile_table
"""
from runtime.cuda.nvrtc import nvrtc, table

if __name__ == "__main__":
    nv = nvrtc()
    print(f"NVRTC {'.'.join(map(str, nv.getVersion()))}; registers (r), static shared memory, stack frame "
          f"per kernel (spills in bold; none allowed)\n")
    print(table())
