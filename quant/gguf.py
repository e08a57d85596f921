"""The one GGUF reader: metadata as values and as raw bytes, tensor infos, memory-mapped data.

    g = GGUFReader("model.gguf")
    g.get("general.architecture")          # values: int/float/bool/str, numpy arrays of numbers,
    g.fields["tokenizer.ggml.tokens"]      #   lists of str
    g.raw_kv("general.name")               # the key/value's bytes exactly as stored
    t = g.tensors["blk.0.attn_q.weight"]   # TensorInfo: name, shape (ne order), qtype, n_bytes
    t.data                                 # uint8 view of the file (np.memmap, nothing copied)

    GGUFReader(path, header_only=True)     # header and tensor infos only: the data may be absent

Everything is checked before anything is allocated or mapped: magic and version, counts and
every length against the bytes left, value and ggml type ids, dimensions (1..4, positive, no
int64 overflow of their product, row length a multiple of the block size), the alignment (a
power of two), offsets (aligned, no overlaps, inside the file), duplicate keys and tensor names.
Every violation raises ``GGUFError`` with one line naming the file and what is wrong.

Layout (little endian; ggml's gguf.cpp, gguf-py's constants.py):
    magic "GGUF" | u32 version (2, 3) | u64 n_tensors | u64 n_kv
    n_kv x  (string key, u32 value type, value)           string = u64 len + utf-8 bytes
            array value = u32 element type, u64 n, n elements (no arrays of arrays)
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
    zero padding to general.alignment (default 32), then the data section: tensor i at
    data_offset + offset_i, offset_i a multiple of the alignment

Fast on a 262k-token vocabulary: arrays of numbers are one ``np.frombuffer`` each, strings one
``struct`` call and one decode each (gguf-py's reader builds a numpy view per element instead).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GGUFError
from .types import BY_ID, QType, get_type

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32           # GGUF_DEFAULT_ALIGNMENT
MAX_DIMS = 4                     # GGML_MAX_DIMS
INT64_MAX = (1 << 63) - 1
HEADER_BYTES = 24                # magic, version, n_tensors, n_kv

# enum gguf_type (gguf.h)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
# fixed-size value types -> numpy dtype (little endian)
SCALAR_DTYPES = {UINT8: "<u1", INT8: "<i1", UINT16: "<u2", INT16: "<i2", UINT32: "<u4", INT32: "<i4",
                 FLOAT32: "<f4", BOOL: "<u1", UINT64: "<u8", INT64: "<i8", FLOAT64: "<f8"}
_STRUCTS = {t: struct.Struct("<" + c) for t, c in ((UINT8, "B"), (INT8, "b"), (UINT16, "H"), (INT16, "h"),
            (UINT32, "I"), (INT32, "i"), (FLOAT32, "f"), (BOOL, "?"), (UINT64, "Q"), (INT64, "q"), (FLOAT64, "d"))}
VALUE_TYPE_NAMES = {UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16", UINT32: "uint32",
                    INT32: "int32", FLOAT32: "float32", BOOL: "bool", STRING: "string", ARRAY: "array",
                    UINT64: "uint64", INT64: "int64", FLOAT64: "float64"}
_U32, _U64, _I64 = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<q")
# smallest possible encodings, to check declared counts against the bytes left
_MIN_KV = 8 + 4 + 1              # empty key, type, a 1-byte value
_MIN_TENSOR = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one ne, type, offset


def _show(s: str, n: int = 60) -> str:
    """A name from the file, safe for a one-line message."""
    r = repr(s)
    return r if len(r) <= n else r[:n - 4] + "...'"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's info. ``shape`` is ggml's ne order (ne[0] is the row length)."""
    name: str
    shape: tuple[int, ...]
    qtype: str                   # ggml type name from quant.types ("Q4_K", "F32", ...)
    offset: int                  # from the start of the data section
    n_bytes: int
    _reader: "GGUFReader" = field(repr=False, compare=False)

    @property
    def type(self) -> QType:
        return get_type(self.qtype)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return self.n_elements // self.shape[0]

    @property
    def data(self) -> np.ndarray:
        """uint8 [n_bytes]: the tensor's bytes, a read-only view of the memory-mapped file."""
        return self._reader._tensor_data(self)


class GGUFReader:
    """Parse and check a GGUF file (see the module docstring).

    ``fields``: key -> value, in file order; ``value_types``: key -> (gguf type, element type or
    None); ``kv_spans``: key -> (start, end) byte offsets of the whole key/value as stored;
    ``tensors``: name -> TensorInfo, in file order; ``data_offset``: where the data section starts.
    ``header_only``: check and read everything but the data, which may be absent (``.data`` of a
    tensor then raises GGUFError).
    """

    def __init__(self, path: str | os.PathLike, header_only: bool = False):
        self.path = str(path)
        self.header_only = header_only
        try:
            self.file_size = os.stat(self.path).st_size
            if not Path(self.path).is_file():
                self._fail("not a regular file")
        except OSError as e:
            raise GGUFError(f"{self.path}: cannot open ({e.strerror or e})") from None
        if self.file_size < HEADER_BYTES:
            self._fail(f"not a GGUF file (only {self.file_size} bytes)")
        try:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise GGUFError(f"{self.path}: cannot map the file ({e})") from None
        self._mv = memoryview(self._mm)
        self._parse()
        del self._mv   # the header is parsed; tensor data is sliced from the memmap

    # ------------------------------------------------------------------ errors

    def _fail(self, what: str):
        raise GGUFError(f"{self.path}: {what}")

    def _need(self, n: int, what: str) -> None:
        if n > self.file_size - self._pos:
            self._fail(f"truncated: {what} needs {n} bytes at offset {self._pos}, "
                       f"{self.file_size - self._pos} left")

    # ------------------------------------------------------------------ primitives

    def _unpack(self, st: struct.Struct, what: str):
        self._need(st.size, what)
        v = st.unpack_from(self._mv, self._pos)[0]
        self._pos += st.size
        return v

    def _str(self, what: str) -> str:
        n = self._unpack(_U64, what)
        self._need(n, f"{what} of length {n}")
        s = str(self._mv[self._pos:self._pos + n], "utf-8", "replace")
        self._pos += n
        return s

    def _strings(self, n: int, what: str) -> list[str]:
        """n strings; the hot loop on a vocabulary (no per-element checks but one bounds test)."""
        mv, p, end, unpack = self._mv, self._pos, self.file_size, _U64.unpack_from
        out = [""] * n
        for i in range(n):
            if p + 8 > end:
                self._pos = p
                self._need(8, f"{what}[{i}]")
            ln = unpack(mv, p)[0]
            p += 8
            if ln > end - p:
                self._pos = p
                self._need(ln, f"{what}[{i}] of length {ln}")
            out[i] = str(mv[p:p + ln], "utf-8", "replace")
            p += ln
        self._pos = p
        return out

    def _value(self, vtype: int, key: str):
        if vtype == STRING:
            return self._str(f"value of {_show(key)}"), None
        st = _STRUCTS.get(vtype)
        if st is not None:
            return self._unpack(st, f"value of {_show(key)}"), None
        if vtype != ARRAY:
            self._fail(f"key {_show(key)}: unknown value type {vtype}")
        etype = self._unpack(_U32, f"array type of {_show(key)}")
        n = self._unpack(_U64, f"array length of {_show(key)}")
        if etype == STRING:
            self._need(8 * n, f"array {_show(key)} of {n} strings")   # each string is >= 8 bytes
            return self._strings(n, _show(key)), etype
        dt = SCALAR_DTYPES.get(etype)
        if dt is None:
            what = "arrays of arrays are not allowed" if etype == ARRAY else f"unknown element type {etype}"
            self._fail(f"key {_show(key)}: {what}")
        size = np.dtype(dt).itemsize
        self._need(n * size, f"array {_show(key)} of {n} {VALUE_TYPE_NAMES[etype]}")
        arr = np.frombuffer(self._mv, dtype=dt, count=n, offset=self._pos).copy()
        self._pos += n * size
        return (arr.astype(bool) if etype == BOOL else arr), etype

    # ------------------------------------------------------------------ the file

    def _parse(self) -> None:
        self._pos = 0
        magic = bytes(self._mv[:4])
        if magic != MAGIC:
            self._fail(f"not a GGUF file (magic {magic!r}, expected {MAGIC!r})")
        self._pos = 4
        self.version = self._unpack(_U32, "version")
        if self.version not in VERSIONS:
            self._fail(f"unsupported GGUF version {self.version} (supported: 2, 3)")
        n_tensors = self._unpack(_U64, "tensor count")
        n_kv = self._unpack(_U64, "key/value count")
        left = self.file_size - self._pos
        if n_kv > left // _MIN_KV or n_tensors > left // _MIN_TENSOR \
                or n_kv * _MIN_KV + n_tensors * _MIN_TENSOR > left:
            self._fail(f"header declares {n_kv} key/values and {n_tensors} tensors, "
                       f"more than the {left} bytes left can hold")

        self.fields: dict = {}
        self.value_types: dict[str, tuple[int, int | None]] = {}
        self.kv_spans: dict[str, tuple[int, int]] = {}
        for _ in range(n_kv):
            start = self._pos
            key = self._str("key")
            if key in self.fields:
                self._fail(f"duplicate key {_show(key)}")
            vtype = self._unpack(_U32, f"value type of {_show(key)}")
            self.fields[key], etype = self._value(vtype, key)
            self.value_types[key] = (vtype, etype)
            self.kv_spans[key] = (start, self._pos)

        self.alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in self.fields:
            a = self.fields["general.alignment"]
            if self.value_types["general.alignment"][0] != UINT32 or a == 0 or a & (a - 1):
                self._fail(f"general.alignment must be a uint32 power of two, not {a!r}")
            self.alignment = int(a)

        raw = []
        names = set()
        for i in range(n_tensors):
            name = self._str(f"name of tensor {i}")
            if name in names:
                self._fail(f"duplicate tensor name {_show(name)}")
            names.add(name)
            nd = self._unpack(_U32, f"n_dims of {_show(name)}")
            if not 1 <= nd <= MAX_DIMS:
                self._fail(f"tensor {_show(name)}: n_dims {nd} is not in 1..{MAX_DIMS}")
            self._need(8 * nd, f"dimensions of {_show(name)}")
            shape = struct.unpack_from(f"<{nd}Q", self._mv, self._pos)
            self._pos += 8 * nd
            type_id = self._unpack(_U32, f"type of {_show(name)}")
            offset = self._unpack(_U64, f"offset of {_show(name)}")
            raw.append((name, shape, type_id, offset))
        self.header_size = self._pos
        self.data_offset = -(-self._pos // self.alignment) * self.alignment

        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, type_id, offset in raw:
            self.tensors[name] = self._tensor_info(name, shape, type_id, offset)
        self._check_layout()

    def _tensor_info(self, name: str, shape, type_id: int, offset: int) -> TensorInfo:
        what = f"tensor {_show(name)}"
        if any(d < 1 or d > INT64_MAX for d in shape):
            self._fail(f"{what}: dimensions {list(shape)} must be positive int64")
        n = 1
        for d in shape:
            n *= d
        if n > INT64_MAX:
            self._fail(f"{what}: {list(shape)} has more than 2^63-1 elements")
        qt = BY_ID.get(type_id)
        if qt is None:
            self._fail(f"{what}: unknown ggml type id {type_id}")
        if shape[0] % qt.block_size:
            self._fail(f"{what}: row length {shape[0]} is not a multiple of {qt.name}'s "
                       f"block size {qt.block_size}")
        if offset % self.alignment:
            self._fail(f"{what}: offset {offset} is not a multiple of the alignment {self.alignment}")
        n_bytes = n // qt.block_size * qt.type_size
        if offset > INT64_MAX or n_bytes > INT64_MAX - offset:
            self._fail(f"{what}: offset {offset} + {n_bytes} bytes overflows")
        return TensorInfo(name, tuple(int(d) for d in shape), qt.name, int(offset), int(n_bytes), self)

    def _check_layout(self) -> None:
        by_offset = sorted(self.tensors.values(), key=lambda t: (t.offset, t.n_bytes))
        for a, b in zip(by_offset, by_offset[1:]):
            if a.offset + a.n_bytes > b.offset:
                self._fail(f"tensors {_show(a.name)} and {_show(b.name)} overlap "
                           f"(bytes {a.offset}..{a.offset + a.n_bytes} and {b.offset}..)")
        if self.header_only or not by_offset:
            return
        last = max(by_offset, key=lambda t: t.offset + t.n_bytes)
        end = self.data_offset + last.offset + last.n_bytes
        if end > self.file_size:
            self._fail(f"truncated: tensor {_show(last.name)} ends at byte {end}, "
                       f"the file has {self.file_size}")

    def _tensor_data(self, t: TensorInfo) -> np.ndarray:
        start = self.data_offset + t.offset
        if start + t.n_bytes > self.file_size:
            self._fail(f"tensor {_show(t.name)}: its data is not in the file (header only)")
        return self._mm[start:start + t.n_bytes]

    # ------------------------------------------------------------------ access

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    def raw_kv(self, key: str) -> bytes:
        """The key/value exactly as stored (key string, type, value): for byte-exact copies."""
        a, b = self.kv_spans[key]
        return bytes(self._mm[a:b])

    @property
    def data_size(self) -> int:
        """Bytes the data section spans (last tensor's end; padding after it not counted)."""
        return max((t.offset + t.n_bytes for t in self.tensors.values()), default=0)


def read_header(path: str | os.PathLike) -> GGUFReader:
    """``GGUFReader(path, header_only=True)``: plan from a file whose data may be absent."""
    return GGUFReader(path, header_only=True)
