"""HF checkpoint -> GGUF conversion, byte-identical with llama.cpp's convert_hf_to_gguf.py.

    from ggufkit.convert import convert
    convert("Llama-3_3-Nemotron-Super-49B-v1_5", "super49b.gguf", outtype="auto")

driver.py runs a conversion; base.py holds the shared machinery (name map, tensor plan, types,
streaming writer); archs.py is the registry of architecture files (llama.py, deci.py: each turns a
config.json into per-layer data); checkpoint.py reads safetensors; vocab.py the tokenizer.
See docs/CONVERT.md.
"""
from ggufkit.convert.base import OUTTYPES, Layer, Model
from ggufkit.convert.driver import convert

__all__ = ["convert", "OUTTYPES", "Layer", "Model"]
