"""Developer scripts, by what they are. Run them from the repository root as modules, e.g.
``python -m tools.bench.bench_runtime MODEL.gguf`` (they import one another and tests.helpers that way).

  bench/        speed against llama.cpp (bench_runtime, bench_quantize, bench_convert, bench_coldstart)
                and microbenchmarks (bench_kernels, bench_quant_kernels, bench_attention,
                bench_gguf_reader, bench_cuda_emu)
  golden/       gen_*: the generators of committed data (tests/golden/*, quant/data/iq_tables.npz,
                runtime/tokenizer's tables, quants.cu's IQ grids); most need llama.cpp
  conformance/  checks against llama.cpp, libggml or a GPU that exit non-zero on a mismatch; the ones
                tests/conformance wraps run under ``pytest -m llamacpp`` / ``pytest -m gpu``
  experiments/  the allocation experiments behind docs/ALLOCATION.md (plain scripts: they need only the
                installed packages, and alloc_bench.sh runs them in its work directory)
  demo.sh       the README's walk-through (convert, info, quantize, perplexity, run)
  get_gemma3.py fetch the real-model check file (tests and .ci/run use it)
"""
