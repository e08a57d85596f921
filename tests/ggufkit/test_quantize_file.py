"""ggufkit.quantize against llama-quantize: same output bytes (sha256 golden from
tools/golden/gen_quantize_golden.py) for every file type, plain / --pure / --imatrix (GGUF and legacy
.dat), the type options, requantize and dequantize; plus refusals and the CLI."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ggufkit.cli import main as cli_main
from ggufkit.errors import GGUFKitError
from ggufkit.quantize import _scan, dequantize_file, parse_positional, quantize_file
from quant.errors import QuantError
from tests.helpers.quantize_cases import (
    GOLDEN_DIR, IMATRIX_GGUF, N_EXPERT, cases, moe_cases, to_kwargs, write_tiny_gguf)

HASHES = json.loads((GOLDEN_DIR / "hashes.json").read_text())
CASES = cases()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = write_tiny_gguf(tmp_path_factory.mktemp("q") / "tiny-f16.gguf")
    assert hashlib.sha256(p.read_bytes()).hexdigest() == HASHES["input"]["sha256"]
    return p


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(want: dict, fn, out):
    if "error" in want:
        with pytest.raises((QuantError, GGUFKitError)):
            fn()
        assert not out.exists()
        return
    fn()
    assert out.stat().st_size == want["size"]
    assert sha(out) == want["sha256"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_bytes_as_llama_quantize(case, tiny, tmp_path, monkeypatch):
    opts, ftype = CASES[case]
    monkeypatch.chdir(GOLDEN_DIR)            # the imatrix path is written into the file
    out = tmp_path / "out.gguf"
    check(HASHES[case], lambda: quantize_file(tiny, out, ftype, 2, progress=False, **to_kwargs(opts)), out)


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    p = write_tiny_gguf(tmp_path_factory.mktemp("moe") / "moe-f16.gguf", n_expert=N_EXPERT)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == HASHES["moe-input"]["sha256"]
    return p


@pytest.mark.parametrize("case", sorted(moe_cases()))
def test_moe_same_bytes_as_llama_quantize(case, tiny_moe, tmp_path, monkeypatch):
    """3-D expert tensors: MXFP4_MOE, layer from the name, per-expert imatrix slices."""
    opts, ftype = moe_cases()[case]
    monkeypatch.chdir(GOLDEN_DIR)
    out = tmp_path / "out.gguf"
    check(HASHES[case], lambda: quantize_file(tiny_moe, out, ftype, 2, progress=False, **to_kwargs(opts)), out)


def test_requantize_and_dequantize(tiny, tmp_path):
    q8, q4 = tmp_path / "q8.gguf", tmp_path / "q4.gguf"
    quantize_file(tiny, q8, "Q8_0", progress=False)
    quantize_file(tiny, q4, "Q4_K_M", progress=False)
    out = tmp_path / "out.gguf"
    with pytest.raises(QuantError, match="requantizing from type Q8_0 is disabled"):
        quantize_file(q8, out, "Q4_K_M", progress=False)
    assert "error" in HASHES["requantize/Q8_0-no-allow"]
    check(HASHES["requantize/Q8_0-Q4_K_M"],
          lambda: quantize_file(q8, out, "Q4_K_M", allow_requantize=True, progress=False), out)
    for t in ("F16", "F32", "BF16"):
        o = tmp_path / f"deq-{t}.gguf"
        check(HASHES[f"dequantize/Q4_K_M-{t}"], lambda: dequantize_file(q4, o, t.lower()), o)


def test_dry_run_sizes_match_real_output(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(GOLDEN_DIR)
    rep = quantize_file(tiny, None, "IQ2_XS", dry_run=True)      # no imatrix: only a warning
    assert any("importance matrix" in w for w in rep.warnings)
    out = tmp_path / "o.gguf"
    real = quantize_file(tiny, out, "IQ2_XS", imatrix=IMATRIX_GGUF, progress=False)
    assert [t.dst_type for t in rep.tensors] == [t.dst_type for t in real.tensors]
    assert rep.dst_bytes == real.dst_bytes
    s = _scan(out)
    assert [t.n_bytes for t in s.tensors] == [t.dst_bytes for t in real.tensors]


def test_refusals(tiny, tmp_path, monkeypatch):
    out = tmp_path / "o.gguf"
    with pytest.raises(QuantError, match="requires an importance matrix"):
        quantize_file(tiny, out, "IQ1_S", progress=False)
    with pytest.raises(QuantError, match="invalid ftype"):
        quantize_file(tiny, out, "Q7_K", progress=False)
    # an imatrix without an entry for a tensor that needs one
    monkeypatch.chdir(GOLDEN_DIR)
    with pytest.raises(QuantError, match="Missing importance matrix for tensor blk.0.attn_k.weight"):
        quantize_file(tiny, out, "IQ2_XXS", imatrix=IMATRIX_GGUF, exclude_weights=["attn_k"],
                      progress=False)
    with pytest.raises(GGUFKitError, match="same"):
        quantize_file(tiny, tiny, "Q8_0", progress=False)
    assert not out.exists()


def test_dynamic_gate_file(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(GOLDEN_DIR)
    out = tmp_path / "dg.gguf"
    rep = quantize_file(tiny, out, "IQ2_XXS", recipe="dynamic-gate", imatrix=IMATRIX_GGUF, progress=False)
    types = {t.name: t.dst_type for t in rep.tensors}
    # 4 blocks: edge 1 -> blocks 0 and 3 IQ4_XS; 1 and 2 middle
    assert types["blk.0.ffn_up.weight"] == types["blk.3.attn_q.weight"] == "IQ4_XS"
    assert types["blk.1.ffn_up.weight"] == types["blk.2.ffn_gate.weight"] == "IQ2_XXS"
    assert types["blk.1.attn_v.weight"] == types["blk.2.ffn_down.weight"] == "IQ3_S"
    assert types["token_embd.weight"] == types["output.weight"] == "Q5_K"
    s = _scan(out)
    assert {i.name: i.type for i in s.infos} == types
    assert s.kv["general.file_type"] == 19


def test_positional_arguments():
    out, ft, n = parse_positional("/m/in.gguf", ["q4_k_m"])
    assert out == "/m/ggml-model-Q4_K_M.gguf" and ft.ftype == 15 and n is None
    out, ft, n = parse_positional("/m/in.gguf", ["/x/o.gguf", "15", "4"])
    assert out == "/x/o.gguf" and ft.name == "Q4_K" and n == 4
    with pytest.raises(GGUFKitError):
        parse_positional("in.gguf", ["o.gguf"])


def test_cli(tiny, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    with pytest.raises(SystemExit) as e:
        cli_main(["quantize", str(tiny), str(out), "Q9_9"])
    assert e.value.code == 1
    assert capsys.readouterr().err.startswith("error: invalid ftype")
    cli_main(["quantize", "--pure", str(tiny), str(out), "q8_0", "2"])
    assert sha(out) == HASHES["Q8_0/pure"]["sha256"]
    cli_main(["dequantize", str(out), str(tmp_path / "d.gguf"), "--outtype", "f32"])
    s = _scan(tmp_path / "d.gguf")
    assert {i.type for i in s.infos} == {"F32"}
    with pytest.raises(SystemExit):
        cli_main(["quantize", "--dry-run", str(tmp_path / "missing.gguf"), "Q4_0"])
    assert "not found" in capsys.readouterr().err
    cli_main(["quantize", "--dry-run", str(tiny), "Q4_K_M"])
    assert "quant size" in capsys.readouterr().out


def test_streaming_chunks_give_same_bytes(tiny, tmp_path, monkeypatch):
    import ggufkit.quantize as gq
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    quantize_file(tiny, a, "Q6_K", progress=False)
    monkeypatch.setattr(gq, "CHUNK_BYTES", 3 * 4 * 256)     # 3 rows per chunk
    quantize_file(tiny, b, "Q6_K", progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert np.array_equal(np.fromfile(a, np.uint8), np.fromfile(b, np.uint8))


@pytest.mark.parametrize("ftype", ["Q8_0", "Q6_K"])
def test_numpy_backend_same_bytes(ftype, tiny, tmp_path):
    out = tmp_path / "np.gguf"
    quantize_file(tiny, out, ftype, pure=True, backend="numpy", progress=False)
    assert sha(out) == HASHES[f"{ftype}/pure"]["sha256"]


def test_half_widening_is_exact_on_threads():
    from ggufkit.quantize import to_f32
    bits = np.random.default_rng(0).integers(0, 1 << 16, 3 << 20, dtype=np.uint16)
    bits[(bits & 0x7C00) == 0x7C00] = 0          # no inf/nan patterns
    raw = bits.view(np.uint8)
    for n in (1, 3):
        f16 = to_f32(raw, "F16", 256, "numba", n)
        assert np.array_equal(f16.reshape(-1), bits.view(np.float16).astype(np.float32))
        bf = to_f32(raw, "BF16", 256, "numba", n)
        assert np.array_equal(bf.reshape(-1).view(np.uint32), bits.astype(np.uint32) << 16)
