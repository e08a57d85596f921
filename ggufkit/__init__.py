"""ggufkit: convert, quantize, run and serve llama.cpp GGUF models in Python.

Layering (see docs/DESIGN.md): ``quant`` is the floor (formats, (de)quantization, recipes),
``runtime`` stands on ``quant``, and ``ggufkit`` is the top floor. Nothing imports upward.

    cli.py, __main__.py   the command line (thin: parse, call one function) and the signal handlers
    commands/             what the commands print and read (streaming, tables, stdin loops)
    convert/              HF checkpoint -> GGUF, byte-identical with convert_hf_to_gguf.py
    quantize.py           llama-quantize's file layout (and dequantize)
    measure.py, budget.py budgeted quantization: measure (errors, sensitivities, cache); choose, check, write
    imatrix.py, compare.py, info.py, plan.py, tokenize.py   the other file-level commands
    serve/                ``ggufkit serve``, the OpenAI-compatible server ([serve] extra)
    fixtures.py, synthetic.py   tiny random checkpoints and GGUFs for tests and scale runs
    atomic.py             checked outputs written through a temp file and renamed; signals
    errors.py             GGUFKitError
"""

__version__ = "0.1.0"
