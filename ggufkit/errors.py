"""User-facing errors: the CLI prints ``error: <message>`` on one line and exits 1."""


class GGUFKitError(Exception):
    """An error caused by bad input (file, option, checkpoint), not by a bug."""
