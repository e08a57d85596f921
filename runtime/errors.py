"""Errors for bad runtime input (unsupported arch/type, truncated file, context overflow)."""


class ModelError(Exception):
    """Bad model file or request; shown to users as a one-line error."""
