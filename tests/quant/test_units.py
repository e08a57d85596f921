"""quant.units: one size parser and one byte formatter for every option and printout."""
from __future__ import annotations

import numpy as np
import pytest

from quant.errors import QuantError
from quant.units import GIB, fmt_bytes, parse_size


def test_parse_size_binary_and_decimal_units():
    assert parse_size("8GiB") == 8 << 30 == parse_size("8G") == parse_size("8 gib") == parse_size("8g")
    assert parse_size("512MiB") == 512 << 20 == parse_size("512M")
    assert parse_size("1.5K") == 1536 and parse_size("3KiB") == 3072 and parse_size("64K") == 64 * 1024
    assert parse_size("2TiB") == parse_size("2T") == 2 << 40
    assert parse_size("2GB") == 2_000_000_000 and parse_size("64KB") == 64_000 and parse_size("1TB") == 10**12
    assert parse_size("123") == 123 == parse_size("123B") and parse_size(7) == 7 and parse_size(np.int64(9)) == 9
    for bad in ("", "8 apples", "-1G", "G", "12XB", "abc", "1.5.5G"):
        with pytest.raises(QuantError, match="cannot read a size"):
            parse_size(bad)


def test_target_size_20G_is_20_GiB():
    """The bug: ``--target-size 20G`` was 20e9 bytes while ``--gpu-memory 20G`` was 20 GiB."""
    from ggufkit.budget import budget_bytes
    assert budget_bytes(None, None, "20G") == 20 * GIB
    assert budget_bytes(None, None, "20GB") == 20 * 10**9


def test_gpu_memory_20G_plans_with_20_GiB(tmp_path):
    from runtime.plan import plan_file
    from tests.helpers.tiny_models import DECI_LAYERS, write_gguf
    p = write_gguf(tmp_path / "deci.gguf", "deci", DECI_LAYERS)
    assert plan_file(str(p), 64, "20G").budget == 20 * GIB == plan_file(str(p), 64, "20GiB").budget


def test_fmt_bytes():
    assert fmt_bytes(0) == "0 B" and fmt_bytes(1023) == "1023 B" and fmt_bytes(1536) == "1.50 KiB"
    assert fmt_bytes(3 * GIB) == "3.00 GiB" and fmt_bytes(5 << 40) == "5.00 TiB" and fmt_bytes(5 << 50) == "5120.00 TiB"
    assert fmt_bytes(1.5 * 2**20, "MiB", "9.3f") == "    1.500 MiB"
