"""One-line notices from the library to whoever owns the terminal (no printing here).

    from runtime import notices
    notices.set_handler(show)      # the CLI passes a function that shows msg on its terminal
    notices.notify("compiling kernels for Q4_K, Q6_K (first run only)")

Without a handler a notice is a ``warnings.warn(..., CompileNotice)`` (shown once per message by
Python's default filter; silence it with ``warnings.simplefilter("ignore", CompileNotice)``).
Importing this module is cheap (no numpy, no Numba), so the CLI can register its handler early.
"""
from __future__ import annotations

import warnings
from typing import Callable


class CompileNotice(UserWarning):
    """Kernels are being compiled (first run after an install or an upgrade)."""


_handler: Callable[[str], None] | None = None


def set_handler(fn: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Route notices to fn (None: back to warnings). Returns the previous handler."""
    global _handler
    prev, _handler = _handler, fn
    return prev


def notify(msg: str) -> None:
    if _handler is not None:
        _handler(msg)
    else:
        warnings.warn(msg, CompileNotice, stacklevel=3)
