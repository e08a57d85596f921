"""Errors for bad quantization input (unknown type, missing imatrix, bad shape)."""


class QuantError(Exception):
    """Bad input to a quantization routine; shown to users as a one-line error."""
