"""``ggufkit compare`` on the llama-tiny fixture: llama-perplexity's KLD statistics (golden
tests/golden/runtime/kld-llama-tiny-q4km.json), cached base logits, md/json/csv output, plot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers import GOLDENS

GOLDEN = GOLDENS / "runtime"


@pytest.fixture(scope="module")
def files(llama_ckpt, tmp_path_factory):
    from ggufkit.convert import convert
    from ggufkit.quantize import quantize_file
    d = tmp_path_factory.mktemp("cmp")
    base = convert(llama_ckpt, d / "llama-tiny-f16.gguf", "f16")
    q4 = d / "q4km.gguf"
    q8 = d / "q8.gguf"
    quantize_file(base, q4, "Q4_K_M")
    quantize_file(base, q8, "Q8_0")
    return Path(base), q4, q8


def test_compare_table_matches_llama_perplexity(files, tmp_path):
    from ggufkit.compare import compare, format_rows

    base, q4, q8 = files
    g = json.loads((GOLDEN / "kld-llama-tiny-q4km.json").read_text())
    rows = compare(str(base), [str(q4), str(q8)], str(GOLDEN / "fixture-text.txt"), g["n_ctx"], g["n_chunks"],
                   decode_tokens=2, cache_dir=str(tmp_path), progress=False)
    assert [r.label for r in rows] == ["base", "q4km", "q8"]
    r4, r8 = rows[1], rows[2]
    assert abs(r4.kld_mean - g["kld_mean"]) / g["kld_mean"] < 0.02
    assert abs(r4.same_top_pct - g["same_top_pct"]) < 2.0
    assert abs(rows[0].ppl - g["ppl_base"]) / g["ppl_base"] < 1e-3
    assert abs(r4.dppl_pct - 100 * (g["ppl_q"] / g["ppl_base"] - 1)) < 0.1
    assert r8.kld_mean < r4.kld_mean and r8.size_gib > r4.size_gib and r4.kld_999 >= r4.kld_mean
    assert r4.decode_ts and r4.decode_ts > 0 and r4.tokens == g["n_chunks"] * (g["n_ctx"] // 2 - 1)
    logits = list(tmp_path.glob("*.logits"))
    assert len(logits) == 1
    mtime = logits[0].stat().st_mtime_ns
    rows2 = compare(str(base), [str(q8)], str(GOLDEN / "fixture-text.txt"), g["n_ctx"], g["n_chunks"],
                    decode_tokens=0, cache_dir=str(tmp_path), progress=False)
    assert logits[0].stat().st_mtime_ns == mtime                  # base logits reused, not recomputed
    assert rows2[1].kld_mean == r8.kld_mean and rows2[1].decode_ts is None
    md = format_rows(rows, "md")
    assert md.splitlines()[0].startswith("| file | size GiB | bpw | PPL")
    assert len(json.loads(format_rows(rows, "json"))) == 3
    assert len(format_rows(rows, "csv").strip().splitlines()) == 4


def test_compare_cli_and_plot(files, tmp_path):
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    from ggufkit.cli import cli
    base, q4, _ = files
    png = tmp_path / "kld.png"
    r = CliRunner().invoke(cli, ["compare", str(base), str(q4), "-f", str(GOLDEN / "fixture-text.txt"), "-c", "128",
                                 "--chunks", "2", "--decode-tokens", "0", "--cache-dir", str(tmp_path),
                                 "--plot", str(png), "-o", "csv"])
    assert r.exit_code == 0, r.output
    assert "q4km" in r.output and png.read_bytes()[:4] == b"\x89PNG"


def test_compare_missing_file(tmp_path):
    from ggufkit.compare import compare
    from ggufkit.errors import GGUFKitError
    with pytest.raises(GGUFKitError, match="no such file"):
        compare(str(tmp_path / "nope.gguf"), [], str(GOLDEN / "fixture-text.txt"))
