"""quant.gguf.GGUFReader: the one GGUF reader. Every validation rule on a small crafted file,
byte-exact raw key/values, agreement with gguf-py's writer, and one-line CLI errors."""
from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

from ggufkit.cli import main
from quant.errors import GGUFError
from quant.gguf import ARRAY, FLOAT32, INT32, STRING, UINT8, UINT32, GGUFReader, read_header

Q4_0, F32 = 2, 0


def s(b: str | bytes) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def tinfo(name: str, shape, type_id: int, offset: int, n_dims: int | None = None) -> bytes:
    nd = len(shape) if n_dims is None else n_dims
    return s(name) + struct.pack("<I", nd) + struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQ", type_id, offset)


def build(kvs=None, tensors=None, data: bytes | None = None, version: int = 3, n_kv=None, n_tensors=None,
          align: int = 32, magic: bytes = b"GGUF") -> bytes:
    """A GGUF file: header, key/values, tensor infos, padding, data (default: zeros)."""
    kvs = [kv("general.architecture", STRING, s("llama"))] if kvs is None else kvs
    tensors = [tinfo("a.weight", (32, 2), F32, 0), tinfo("b.weight", (64,), Q4_0, 256)] if tensors is None else tensors
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    meta = head + b"".join(kvs) + b"".join(tensors)
    meta += b"\0" * (-len(meta) % align)
    if data is None:
        data = bytes(256 + 36)
    return meta + data


def write(tmp_path, blob: bytes, name: str = "t.gguf"):
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def fails(tmp_path, blob: bytes, match: str, **kw) -> str:
    p = write(tmp_path, blob)
    with pytest.raises(GGUFError, match=match) as e:
        GGUFReader(p, **kw)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg
    return msg


def test_valid_crafted_file(tmp_path):
    data = np.arange(64, dtype=np.float32).tobytes() + bytes(256 - 256) + bytes(36)
    g = GGUFReader(write(tmp_path, build(data=data)))
    assert g.version == 3 and g.get("general.architecture") == "llama" and g.data_offset % 32 == 0
    a, b = g.tensors["a.weight"], g.tensors["b.weight"]
    assert (a.shape, a.qtype, a.n_bytes, b.qtype, b.n_bytes) == ((32, 2), "F32", 256, "Q4_0", 36)
    np.testing.assert_array_equal(a.data.view(np.float32), np.arange(64, dtype=np.float32))
    assert not a.data.flags.writeable


# --- header ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 23])
def test_empty_and_tiny_files(tmp_path, size):
    fails(tmp_path, b"GGUF\3\0\0\0"[:size] + bytes(max(0, size - 8)), "not a GGUF file")


def test_bad_magic(tmp_path):
    fails(tmp_path, build(magic=b"GGML"), r"not a GGUF file \(magic b'GGML'")


@pytest.mark.parametrize("version", [0, 1, 4, 0xFFFFFFFF])
def test_bad_version(tmp_path, version):
    fails(tmp_path, build(version=version), f"unsupported GGUF version {version}")


@pytest.mark.parametrize("counts", [dict(n_kv=2 ** 40), dict(n_tensors=2 ** 40), dict(n_kv=2 ** 64 - 1),
                                    dict(n_kv=20, n_tensors=20)])
def test_counts_larger_than_the_file(tmp_path, counts):
    fails(tmp_path, build(**counts), "more than the .* bytes left can hold")


# --- key/values -----------------------------------------------------------------------------

def test_string_length_past_the_end(tmp_path):
    blob = build(kvs=[s("general.architecture")[:8].replace(struct.pack("<Q", 20), struct.pack("<Q", 2 ** 60))
                      + b"general.architecture" + struct.pack("<I", STRING) + s("llama")])
    fails(tmp_path, blob, "truncated: key of length 1152921504606846976")


def test_value_string_length_past_the_end(tmp_path):
    blob = build(kvs=[kv("general.name", STRING, struct.pack("<Q", 2 ** 62) + b"x")])
    fails(tmp_path, blob, "truncated: value of 'general.name'")


@pytest.mark.parametrize("etype,n", [(INT32, 2 ** 61), (FLOAT32, 10 ** 6), (STRING, 2 ** 40), (UINT8, 10 ** 5)])
def test_array_length_past_the_end(tmp_path, etype, n):
    blob = build(kvs=[kv("x.arr", ARRAY, struct.pack("<IQ", etype, n) + bytes(16))])
    fails(tmp_path, blob, "truncated: array 'x.arr'")


def test_string_array_element_past_the_end(tmp_path):
    blob = build(kvs=[kv("x.tokens", ARRAY, struct.pack("<IQ", STRING, 2) + s("ok") + struct.pack("<Q", 10 ** 9))])
    fails(tmp_path, blob, r"truncated: 'x.tokens'\[1\] of length 1000000000")


@pytest.mark.parametrize("vtype", [13, 99, 0xFFFFFFFF])
def test_unknown_value_type(tmp_path, vtype):
    fails(tmp_path, build(kvs=[kv("x.y", vtype, bytes(8))]), f"key 'x.y': unknown value type {vtype}")


def test_unknown_array_element_type_and_nested_arrays(tmp_path):
    fails(tmp_path, build(kvs=[kv("x.y", ARRAY, struct.pack("<IQ", 77, 1) + bytes(8))]), "unknown element type 77")
    fails(tmp_path, build(kvs=[kv("x.y", ARRAY, struct.pack("<IQ", ARRAY, 1) + bytes(16))]), "arrays of arrays")


def test_duplicate_key(tmp_path):
    k = kv("general.name", STRING, s("a"))
    fails(tmp_path, build(kvs=[k, k]), "duplicate key 'general.name'")


@pytest.mark.parametrize("payload", [struct.pack("<I", 0), struct.pack("<I", 48), struct.pack("<I", 3)])
def test_alignment_must_be_a_power_of_two(tmp_path, payload):
    fails(tmp_path, build(kvs=[kv("general.alignment", UINT32, payload)]), "general.alignment must be a uint32 power of two")


def test_alignment_must_be_uint32(tmp_path):
    fails(tmp_path, build(kvs=[kv("general.alignment", INT32, struct.pack("<i", 32))]), "general.alignment must be")


def test_custom_alignment(tmp_path):
    blob = build(kvs=[kv("general.alignment", UINT32, struct.pack("<I", 64))],
                 tensors=[tinfo("a", (32,), F32, 0), tinfo("b", (32,), Q4_0, 128)], align=64, data=bytes(128 + 18))
    g = GGUFReader(write(tmp_path, blob))
    assert g.alignment == 64 and g.data_offset % 64 == 0 and g.tensors["b"].data.size == 18
    blob = build(kvs=[kv("general.alignment", UINT32, struct.pack("<I", 64))],
                 tensors=[tinfo("a", (32,), F32, 0), tinfo("b", (32,), Q4_0, 160)], align=64, data=bytes(256))
    fails(tmp_path, blob, "offset 160 is not a multiple of the alignment 64")


# --- tensor infos ---------------------------------------------------------------------------

@pytest.mark.parametrize("nd", [0, 5, 2 ** 31])
def test_n_dims(tmp_path, nd):
    fails(tmp_path, build(tensors=[tinfo("a", (32,), F32, 0, n_dims=nd)]), f"n_dims {nd} is not in 1..4")


@pytest.mark.parametrize("shape", [(32, 0), (0,), (32, 2 ** 64 - 1), (32, 2 ** 63)])
def test_dims_must_be_positive_int64(tmp_path, shape):
    fails(tmp_path, build(tensors=[tinfo("a", shape, F32, 0)]), "must be positive int64")


def test_dims_product_overflow(tmp_path):
    fails(tmp_path, build(tensors=[tinfo("a", (2 ** 32, 2 ** 32), F32, 0)]), "more than 2\\^63-1 elements")
    fails(tmp_path, build(tensors=[tinfo("a", (2 ** 20,) * 4, F32, 0)]), "more than 2\\^63-1 elements")


@pytest.mark.parametrize("type_id", [4, 5, 31, 36, 43, 2 ** 32 - 1])
def test_unknown_ggml_type(tmp_path, type_id):
    fails(tmp_path, build(tensors=[tinfo("a", (32,), type_id, 0)]), f"unknown ggml type id {type_id}")


def test_row_length_vs_block_size(tmp_path):
    fails(tmp_path, build(tensors=[tinfo("a", (48, 2), Q4_0, 0)]), "row length 48 is not a multiple of Q4_0's block size 32")


def test_offset_alignment(tmp_path):
    fails(tmp_path, build(tensors=[tinfo("a", (32,), F32, 4)]), "offset 4 is not a multiple of the alignment 32")


def test_offset_overflow(tmp_path):
    fails(tmp_path, build(tensors=[tinfo("a", (32,), F32, 2 ** 64 - 32)]), "overflows")


def test_overlapping_tensors(tmp_path):
    blob = build(tensors=[tinfo("a", (32, 2), F32, 0), tinfo("b", (64,), Q4_0, 224)])
    fails(tmp_path, blob, "tensors 'a' and 'b' overlap")


def test_duplicate_tensor_names(tmp_path):
    fails(tmp_path, build(tensors=[tinfo("a", (32,), F32, 0), tinfo("a", (32,), F32, 128)]), "duplicate tensor name 'a'")


def test_data_past_end_of_file(tmp_path):
    msg = fails(tmp_path, build(data=bytes(256 + 35)), "truncated: tensor 'b.weight' ends at byte")
    assert "the file has" in msg


def test_header_only(tmp_path):
    """A file cut after its tensor infos: planned from the header, refused by a normal open."""
    full = build()
    cut = full[:GGUFReader(write(tmp_path, full)).header_size]     # no padding, no data
    p = write(tmp_path, cut)
    g = read_header(p)
    assert g.header_only and list(g.tensors) == ["a.weight", "b.weight"]
    assert g.tensors["b.weight"].n_bytes == 36 and g.data_size == 256 + 36
    with pytest.raises(GGUFError, match="not in the file"):
        g.tensors["b.weight"].data
    with pytest.raises(GGUFError, match="truncated: tensor 'b.weight'"):
        GGUFReader(p)
    # header-only still checks everything else
    fails(tmp_path, build(tensors=[tinfo("a", (48,), Q4_0, 0)], data=b""), "row length 48", header_only=True)


def test_every_truncation_is_a_gguf_error(tmp_path):
    kvs = [kv("general.architecture", STRING, s("llama")), kv("x.ids", ARRAY, struct.pack("<IQ", INT32, 3) + bytes(12)),
           kv("x.toks", ARRAY, struct.pack("<IQ", STRING, 2) + s("ab") + s("c")), kv("x.f", FLOAT32, bytes(4))]
    full = build(kvs=kvs)
    GGUFReader(write(tmp_path, full))
    for n in range(len(full)):
        with pytest.raises(GGUFError):
            GGUFReader(write(tmp_path, full[:n]))


def test_random_byte_flips_raise_only_gguf_error(tmp_path):
    kvs = [kv("general.architecture", STRING, s("llama")), kv("x.ids", ARRAY, struct.pack("<IQ", INT32, 3) + bytes(12))]
    full = bytearray(build(kvs=kvs))
    rng = np.random.default_rng(0)
    header = len(full) - 256 - 36
    for _ in range(300):
        b = bytearray(full)
        for i in rng.integers(0, header, 3):
            b[i] = rng.integers(0, 256)
        try:
            GGUFReader(write(tmp_path, bytes(b)))
        except GGUFError as e:
            assert "\n" not in str(e)


# --- agreement with gguf-py's writer; raw key/value bytes ------------------------------------

def test_reads_what_gguf_py_writes(tmp_path):
    p = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_uint32("llama.block_count", 3)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("x.flag", True)
    w.add_array("llama.attention.head_count", [4, 0, 2])
    w.add_token_list(["<s>", "a", "é", ""])
    w.add_token_scores([0.0, -1.5, 2.0, 3.0])
    a = np.arange(96, dtype=np.float32).reshape(3, 32)
    q = gguf.quants.quantize(np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("a", a)
    w.add_tensor("q", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

    g = GGUFReader(p)
    r = gguf.GGUFReader(p)
    assert g.get("llama.block_count") == 3 and g.get("x.flag") is True
    assert g.get("llama.rope.freq_base") == 10000.0
    assert list(g.get("llama.attention.head_count")) == [4, 0, 2]
    assert g.get("tokenizer.ggml.tokens") == ["<s>", "a", "é", ""]
    np.testing.assert_array_equal(g.get("tokenizer.ggml.scores"), [0.0, -1.5, 2.0, 3.0])
    assert list(g.fields) == [k for k in r.fields if not k.startswith("GGUF.")]
    for k, f in r.fields.items():           # raw spans: exactly the bytes gguf-py located
        if not k.startswith("GGUF."):
            assert g.raw_kv(k) == b"".join(bytes(part) for part in f.parts)
    np.testing.assert_array_equal(g.tensors["a"].data.view(np.float32).reshape(3, 32), a)
    assert g.tensors["q"].shape == (64, 2) and g.tensors["q"].qtype == "Q8_0"
    np.testing.assert_array_equal(g.tensors["q"].data, np.asarray(q).reshape(-1))
    assert [t.data_offset for t in r.tensors] == [g.data_offset + t.offset for t in g.tensors.values()]


# --- one-line CLI errors (no "cannot mmap an empty file" traceback) ---------------------------

@pytest.mark.parametrize("cmd", [["info", "{p}"], ["quantize", "{p}", "{o}", "Q4_0"],
                                 ["dequantize", "{p}", "{o}"], ["run", "{p}", "-p", "hi", "-n", "1"]])
@pytest.mark.parametrize("blob", [b"", b"GGUF\3\0\0\0" + bytes(4)], ids=["empty", "tiny"])
def test_cli_bad_file_is_one_line(tmp_path, capsys, cmd, blob):
    p = write(tmp_path, blob, "bad.gguf")
    o = tmp_path / "out.gguf"
    with pytest.raises(SystemExit) as e:
        main([a.format(p=p, o=o) for a in cmd])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err == f"error: {p}: not a GGUF file (only {len(blob)} bytes)\n"
    assert not o.exists()


@pytest.mark.parametrize("cmd", [["info", "{p}"], ["quantize", "{p}", "{o}", "Q4_0"], ["run", "{p}", "-p", "hi"]])
def test_cli_truncated_file_is_one_line(tmp_path, capsys, cmd):
    """``info`` on a truncated file once said ``cannot reshape array of size ...``."""
    p = write(tmp_path, build()[:-10], "cut.gguf")
    o = tmp_path / "out.gguf"
    with pytest.raises(SystemExit) as e:
        main([a.format(p=p, o=o) for a in cmd])
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith(f"error: {p}: truncated: tensor 'b.weight' ends at byte")
    assert err.count("\n") == 1 and not o.exists()
