"""Byte sizes, one spelling for the whole tree (a leaf: imports only quant.errors).

    parse_size("20G") == parse_size("20GiB") == 20 * 2**30      # K/M/G/T, KiB..TiB: powers of 1024
    parse_size("20GB") == 20 * 10**9                             # KB/MB/GB/TB: powers of 1000
    parse_size("1000") == 1000                                   # plain digits: bytes
    fmt_bytes(1536) == "1.50 KiB";  fmt_bytes(n, "MiB", "9.3f") for a fixed unit and width

``--target-size`` (quantize) and ``--gpu-memory`` (run, chat, plan, ...) both read sizes here, so
``20G`` is the same number of bytes for both.
"""
from __future__ import annotations

import numbers
import re

from quant.errors import QuantError

SIZE_HELP = "bytes, or with a unit: K/M/G/T = KiB/MiB/GiB/TiB (powers of 1024), KB/MB/GB/TB (powers of 1000)"
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
MIB, GIB = 1 << 20, 1 << 30

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text) -> int:
    """Bytes from "8GiB", "8G", "7.5GB", "512MiB", "123456" or an int (see the module docstring)."""
    if isinstance(text, numbers.Integral):                     # int, numpy ints
        return int(text)
    m = _SIZE.match(str(text))
    if not m or (not m.group(2) and m.group(3).lower() not in ("", "b")):
        raise QuantError(f"cannot read a size from {text!r} ({SIZE_HELP})")
    num, unit, suffix = float(m.group(1)), m.group(2).lower(), m.group(3).lower()
    exp = " kmgt".index(unit) if unit else 0
    base = 1000 if suffix == "b" and unit else 1024
    return int(num * base ** exp)


def fmt_bytes(n: float, unit: str | None = None, spec: str = ".2f") -> str:
    """``n`` bytes as "<number> <unit>": in ``unit`` (one of UNITS) or else the largest binary unit
    that n reaches; whole bytes are printed without decimals."""
    if unit is None:
        i = 0
        while i + 1 < len(UNITS) and n >= 1024 ** (i + 1):
            i += 1
        unit = UNITS[i]
        if i == 0:
            return f"{n:.0f} B"
    return f"{n / 1024 ** UNITS.index(unit):{spec}} {unit}"
