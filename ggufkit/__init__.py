"""ggufkit: convert, quantize and run llama.cpp GGUF models in Python.

Layering (see docs/DESIGN.md): ``quant`` is the floor (formats, (de)quantization,
recipes), ``runtime`` stands on ``quant``, and ``ggufkit`` is the top floor (CLI,
conversion, file-level orchestration). Nothing imports upward.
"""

__version__ = "0.1.0"
