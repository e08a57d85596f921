"""A fast, read-only GGUF parser: metadata as Python values, tensors as memory-mapped views.

``gguf.GGUFReader`` builds a numpy view per array element, which takes ~15 s on a 262k-token
vocabulary (gemma3). This reads the same format (gguf-py's ``constants.py`` / ggml's
``gguf.cpp``) with ``struct`` in well under a second; tensor data is a view of one
``np.memmap`` of the whole file (nothing copied).

Layout (little endian):
    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x  (string key, u32 type, value)           string = u64 len + utf-8 bytes
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    padding to general.alignment (32), then tensor data at data_start + offset
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from runtime.errors import ModelError

# GGUFValueType -> (struct code, numpy dtype)
_SCALAR = {0: ("B", np.uint8), 1: ("b", np.int8), 2: ("H", np.uint16), 3: ("h", np.int16),
           4: ("I", np.uint32), 5: ("i", np.int32), 6: ("f", np.float32), 7: ("?", np.bool_),
           10: ("Q", np.uint64), 11: ("q", np.int64), 12: ("d", np.float64)}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]          # ggml ne order: ne[0] is the row length
    qtype: str                      # GGMLQuantizationType name
    data: np.ndarray                # uint8 view of the file, exactly the tensor's bytes


class GGUFFile:
    """``fields``: key -> value (arrays of numbers as numpy, of strings as list);
    ``tensors``: name -> TensorInfo, in file order."""

    def __init__(self, path: str):
        self.path = str(path)
        try:
            self.mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (ValueError, OSError) as e:
            raise ModelError(f"{path}: cannot map file ({e})") from None
        buf = self.mm
        self._buf = memoryview(buf)
        self._pos = 0
        if bytes(buf[:4]) != b"GGUF":
            raise ModelError(f"{path}: not a GGUF file (bad magic)")
        try:
            version, n_tensors, n_kv = struct.unpack_from("<IQQ", self._buf, 4)
            if version not in (2, 3):
                raise ModelError(f"{path}: unsupported GGUF version {version}")
            self._pos = 24
            self.fields: dict = {}
            for _ in range(n_kv):
                key = self._str()
                (vtype,) = self._unpack("<I")
                self.fields[key] = self._value(vtype)
            infos = []
            for _ in range(n_tensors):
                name = self._str()
                (n_dims,) = self._unpack("<I")
                shape = self._unpack(f"<{n_dims}Q")
                qtype, offset = self._unpack("<IQ")
                infos.append((name, tuple(int(d) for d in shape), int(qtype), int(offset)))
        except (struct.error, UnicodeDecodeError, IndexError):
            raise ModelError(f"{path}: truncated or corrupt GGUF header") from None
        align = int(self.fields.get("general.alignment", 32))
        data_start = -(-self._pos // align) * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, qt, offset in infos:
            try:
                qname = GGMLQuantizationType(qt).name
            except ValueError:
                raise ModelError(f"{name}: unknown ggml type id {qt}") from None
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(qt)]
            nbytes = int(np.prod(shape)) // block * size
            start = data_start + offset
            if start + nbytes > buf.size:
                raise ModelError(f"{path}: truncated file: tensor {name} needs bytes up to "
                                 f"{start + nbytes}, file has {buf.size}")
            self.tensors[name] = TensorInfo(name, shape, qname, buf[start:start + nbytes])

    # ------------------------------------------------------------ primitives

    def _unpack(self, fmt: str):
        v = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += struct.calcsize(fmt)
        return v

    def _str(self) -> str:
        (n,) = struct.unpack_from("<Q", self._buf, self._pos)
        s = bytes(self._buf[self._pos + 8:self._pos + 8 + n])
        if len(s) != n:
            raise struct.error("short string")
        self._pos += 8 + n
        return s.decode("utf-8", errors="replace")

    def _value(self, vtype: int):
        if vtype == _STRING:
            return self._str()
        if vtype in _SCALAR:
            return self._unpack("<" + _SCALAR[vtype][0])[0]
        if vtype == _ARRAY:
            etype, n = self._unpack("<IQ")
            if etype == _STRING:
                return [self._str() for _ in range(n)]
            if etype in _SCALAR:
                dt = np.dtype(_SCALAR[etype][1]).newbyteorder("<")
                end = self._pos + n * dt.itemsize
                if end > len(self._buf):
                    raise struct.error("short array")
                arr = np.frombuffer(self._buf[self._pos:end], dtype=dt).copy()
                self._pos = end
                return arr
            return [self._value(etype) for _ in range(n)]
        raise ModelError(f"{self.path}: unknown GGUF value type {vtype}")

    def get(self, key: str, default=None):
        return self.fields.get(key, default)
