"""Inference runtime: memory-mapped GGUF models on Numba CPU kernels and CuPy CUDA kernels.
Stands on ``quant``; never imports ``ggufkit``.

    loader.py       open a GGUF, build its model, set the thread count (once, at load)
    models/         one small file per architecture (ARCHS), base.py: LayerSpec's named kinds
    backend.py      the Backend interface the models call, CPUBackend, NUMERICS
    qtensor.py      QTensor: a weight kept quantized
    device.py       where a layer runs, and moving activations between devices
    kernels/        the Numba CPU kernels (they know nothing about models)
    cuda/           the CUDA kernels and their launchers, on a GPU or emulated
    reference.py    numpy references of every kernel (the tests' oracle; no production path uses it)
    plan.py         GPU placement from the header alone
    generate.py     prefill, decode_one, sample, generate
    chat.py         chat templates, reasoning on/off, tool calls
    perplexity.py   perplexity and KL divergence as llama-perplexity; chunks() shared with imatrix
    imatrix.py      importance-matrix collection as llama-imatrix
    sensitivity.py  how far outputs move when weights change (budgeted allocation's probe)
    bench.py        pp/tg speed as llama-bench measures it
    tokenizer/      every llama.cpp vocab and pre-tokenizer type
    notices.py      one-line notices for whoever owns the terminal
    errors.py       ModelError
"""
