"""Errors for bad quantization input (unknown type, missing imatrix, bad shape) and bad GGUF files."""


class QuantError(Exception):
    """Bad input to a quantization routine; shown to users as a one-line error."""


class GGUFError(QuantError):
    """A GGUF file that cannot be read: one line naming the file and what is wrong."""
