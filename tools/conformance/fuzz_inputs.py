#!/usr/bin/env python3
"""Fuzz ggufkit's inputs: mutated GGUF files and safetensors headers through the CLI, in-process.

    python -m tools.conformance.fuzz_inputs --cases 10000 --seed 1 --report fuzz-report.json
    python -m tools.conformance.fuzz_inputs --case 1234 --seed 1 -v       # replay one case, show its output

Seed files (made once in --workdir/seeds):
  tiny-q8_0 / tiny-q4_k_m   a small-vocabulary llama GGUF (written with gguf-py), quantized by
                            ``ggufkit quantize``; run / info / quantize / dequantize use it.
  pipeline-q8_0             ``ggufkit fixture`` (llama, hidden 32) -> ``convert`` -> ``quantize``;
                            its 128k-token vocabulary makes it the slow, realistic one (info, quantize).
  header-heavy              every GGUF value type, long arrays, general.alignment 64,
                            tensors of several types (info, quantize, dequantize).
  checkpoint                the fixture checkpoint; one shard's safetensors header is mutated (convert).

GGUF mutations know the file's structure (walked here, independently of the reader under test):
header fields (version, tensor and KV counts), string and array lengths, value and array element
types, scalar values (hparams), n_dims, dimensions, tensor type ids, tensor offsets (to 0, unaligned,
another tensor's, past the end), truncation (anywhere, or at a field), inserted/deleted bytes and
random byte flips. Safetensors mutations: the header length, dtype, shape, data_offsets, removed or
renamed entries, JSON truncation and byte flips, and file truncation.

Each case runs ``ggufkit.cli.main([...])`` in a worker process (stdout/stderr captured). Verdicts:
  ok          exit 0                      reject     exit 1/2, last stderr line "error: ..."
  traceback   any other exception, or an error that is not one line
  hang        more than --timeout (10) s of CPU time, or 6 x that of wall time, twice (the worker
              is killed and restarted each time). CPU time, because wall time on a loaded shared
              machine is no measure; the retry absorbs a cold Numba compile.
  alloc       MemoryError under RLIMIT_AS = the worker's size + max(256 MiB, 16 x input size)
  left        files left in the output directory after a failure (or beyond the output on success)
Exit status 0 when there are no tracebacks, hangs, allocs or leftovers.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 31, 32, 255, 256, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]
INTERESTING_U64 = [0, 1, 2, 7, 32, 255, 4096, 1 << 20, 1 << 31, 1 << 32, (1 << 32) + 1, 1 << 40,
                   (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 2, (1 << 64) - 1]
VERDICTS = ("ok", "reject", "traceback", "hang", "alloc", "left")
BAD = ("traceback", "hang", "alloc", "left")


# ================================================================ seeds

def _small_vocab():
    """A byte-level BPE vocabulary of 256 bytes + a few merges + 3 specials (llama-bpe pre-tokenizer)."""
    from runtime.tokenizer import BYTE_TO_UNICODE
    toks = [BYTE_TO_UNICODE[b] for b in range(256)]
    merges = []
    for a, b in [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "t"), ("hell", "o"), ("Ġt", "h")]:
        merges.append(f"{a} {b}")
        toks.append(a + b)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    types = [1] * len(toks) + [3] * len(specials)
    return toks + specials, types, merges, len(toks), len(toks) + 1


def write_small_llama(path: Path, n_embd: int = 256, n_ff: int = 256, seed: int = 0) -> Path:
    import numpy as np

    from tests.helpers.tiny_models import write_llama1
    toks, types, merges, bos, eos = _small_vocab()
    return write_llama1(path, toks, types, merges, bos, eos, "llama-bpe", n_embd, n_ff, n_head=4, n_head_kv=2,
                        n_ctx=256, std=0.05, wtype=np.float16, seed=seed, name="fuzz-small",
                        hparams=(("add_rope_freq_base", 10000.0), ("add_vocab_size", len(toks))))


def write_header_heavy(path: Path) -> Path:
    """Every GGUF value type, long arrays, an explicit alignment, several tensor types (no arrays of
    arrays: llama.cpp's gguf.cpp refuses them, so the reader does)."""
    import numpy as np
    from gguf import GGUFValueType, GGUFWriter
    import quant
    rng = np.random.default_rng(1)
    w = GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_uint8("fuzz.u8", 200); w.add_int8("fuzz.i8", -5); w.add_uint16("fuzz.u16", 60000)  # noqa: E702
    w.add_int16("fuzz.i16", -30000); w.add_uint32("fuzz.u32", 4000000000); w.add_int32("fuzz.i32", -7)  # noqa: E702
    w.add_float32("fuzz.f32", 1.5); w.add_uint64("fuzz.u64", 1 << 40); w.add_int64("fuzz.i64", -(1 << 40))  # noqa: E702
    w.add_float64("fuzz.f64", 2.25); w.add_bool("fuzz.bool", True); w.add_string("fuzz.str", "héllo ✓")  # noqa: E702
    w.add_array("fuzz.arr.u32", list(range(100)))
    w.add_array("fuzz.arr.f32", [0.5 * i for i in range(50)])
    w.add_array("fuzz.arr.str", [f"s{i}" * (i % 5) for i in range(300)])
    w.add_array("fuzz.arr.long", list(range(5000)))
    w.add_key_value("fuzz.arr.bool", [True, False] * 20, GGUFValueType.ARRAY, sub_type=GGUFValueType.BOOL)
    for i, (name, qt) in enumerate([("F32", "F32"), ("F16", "F16"), ("Q8_0", "Q8_0"), ("Q4_0", "Q4_0"),
                                    ("Q4_K", "Q4_K"), ("Q6_K", "Q6_K"), ("BF16", "BF16")]):
        x = rng.standard_normal((4, 256)).astype(np.float32)
        raw = quant.quantize(x, qt, backend="numpy") if qt not in ("F32",) else x
        from gguf import GGMLQuantizationType as T
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.ascontiguousarray(raw), raw_dtype=T[qt])
    w.add_tensor("norm.weight", np.ones(256, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_seeds(d: Path) -> dict[str, Path]:
    """Seed files in d (made once, reused)."""
    from ggufkit.convert import convert
    from ggufkit.fixtures import PRESETS, _llama_config, make_checkpoint
    from ggufkit.quantize import quantize_file
    d.mkdir(parents=True, exist_ok=True)
    s = {"tiny-f16": d / "tiny-f16.gguf", "tiny-q8_0": d / "tiny-q8_0.gguf", "tiny-q4_k_m": d / "tiny-q4_k_m.gguf",
         "header-heavy": d / "header-heavy.gguf", "checkpoint": d / "ckpt", "pipeline-q8_0": d / "pipeline-q8_0.gguf"}
    if not s["tiny-f16"].exists():
        write_small_llama(s["tiny-f16"])
    for k, t in (("tiny-q8_0", "Q8_0"), ("tiny-q4_k_m", "Q4_K_M")):
        if not s[k].exists():
            quantize_file(s["tiny-f16"], s[k], t, progress=False)
    if not s["header-heavy"].exists():
        write_header_heavy(s["header-heavy"])
    if not (s["checkpoint"] / "config.json").exists():
        PRESETS.setdefault("fuzz-llama", lambda: _llama_config(32, 1, 2, 1, 64))
        make_checkpoint(s["checkpoint"], "fuzz-llama", seed=0, n_shards=2)
    if "pipeline-q8_0" not in dict(GGUF_SEEDS):
        del s["pipeline-q8_0"]
    elif not s["pipeline-q8_0"].exists():
        f16 = d / "pipeline-f16.gguf"
        convert(s["checkpoint"], f16, "f16")
        quantize_file(f16, s["pipeline-q8_0"], "Q8_0", progress=False)
        f16.unlink()
    from quant.gguf import GGUFReader
    for k, p in s.items():             # every seed is valid: the mutations are what is wrong
        if p.suffix == ".gguf":
            GGUFReader(p)
    return s


# ================================================================ GGUF structure (the fuzzer's own walk)

def walk_gguf(b: bytes) -> dict:
    """Offsets of every header field of a valid GGUF: {"fields": [(kind, off, size, extra)], ...}."""
    F = []
    pos = 0

    def rd(fmt, kind=None, extra=None):
        nonlocal pos
        n = struct.calcsize(fmt)
        v = struct.unpack_from(fmt, b, pos)[0]
        if kind:
            F.append((kind, pos, n, extra))
        pos += n
        return v

    def string(kind="str_len"):
        nonlocal pos
        n = rd("<Q", kind)
        if n > len(b) - pos:
            raise ValueError("string longer than the file")
        pos += n

    sizes = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def value(vt, key):
        nonlocal pos
        if vt in sizes:
            rd(sizes[vt], "scalar", (vt, key))
        elif vt == 8:
            string("str_len")
        elif vt == 9:
            at = rd("<I", "array_type", key)
            n = rd("<Q", "array_len", key)
            if n > len(b) - pos:
                raise ValueError("array longer than the file")
            for _ in range(n):
                value(at, key)
        else:
            raise ValueError(vt)

    pos = 4
    rd("<I", "version")
    nt = rd("<Q", "n_tensors")
    nkv = rd("<Q", "n_kv")
    align = 32
    for _ in range(nkv):
        kstart = pos
        n = rd("<Q", "key_len")
        key = b[pos:pos + n].decode()
        pos += n
        vt = rd("<I", "value_type", key)
        vstart = pos
        value(vt, key)
        if key == "general.alignment":
            align = struct.unpack_from("<I", b, vstart)[0]
        F.append(("kv", kstart, pos - kstart, key))
    tensors = []
    for _ in range(nt):
        tstart = pos
        string("tname_len")
        nd = rd("<I", "n_dims")
        dims = [rd("<q", "dim") for _ in range(nd)]
        typ = rd("<I", "tensor_type")
        off_pos = pos
        off = rd("<Q", "tensor_offset")
        tensors.append((tstart, off_pos, off, dims, typ))
    return {"fields": F, "header_end": pos, "data_start": (pos + align - 1) // align * align,
            "tensors": tensors, "align": align}


def mutate_gguf(b: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutation of a valid GGUF; returns (bytes, description)."""
    info = walk_gguf(b)
    F, he = info["fields"], info["header_end"]
    op = rng.choices(["field", "truncate", "flip", "shift", "offset", "dims", "type", "multi"],
                     [30, 12, 18, 6, 10, 10, 8, 6])[0]
    out = bytearray(b)

    def put(off, size, v):
        out[off:off + size] = int(v).to_bytes(size, "little", signed=False) if v >= 0 else \
            int(v).to_bytes(size, "little", signed=True)

    def pick(kinds):
        c = [f for f in F if f[0] in kinds]
        return rng.choice(c) if c else None

    if op == "field":
        f = pick(("version", "n_tensors", "n_kv", "key_len", "str_len", "value_type", "array_type",
                  "array_len", "scalar", "tname_len"))
        kind, off, size, extra = f
        cur = int.from_bytes(b[off:off + size], "little")
        pool = (INTERESTING_U64 if size == 8 else INTERESTING_U32 if size == 4 else [0, 1, 127, 128, 255] if size == 1
                else [0, 1, 0x7FFF, 0x8000, 0xFFFF]) + [max(cur - 1, 0), cur + 1, len(b)]
        v = rng.choice(pool) % (1 << (8 * size))
        put(off, size, v)
        return bytes(out), f"field {kind}@{off} {extra if extra else ''} {cur}->{v}"
    if op == "truncate":
        if rng.random() < 0.5:
            f = rng.choice(F)
            n = f[1] + rng.choice([0, 1, f[2] - 1])
        else:
            n = rng.randrange(0, len(b))
        return bytes(out[:n]), f"truncate {len(b)}->{n}"
    if op == "flip":
        k = rng.choice([1, 1, 2, 4, 8, 32])
        where = he if rng.random() < 0.75 else len(b)
        pos = sorted(rng.randrange(0, where) for _ in range(k))
        for p in pos:
            out[p] ^= rng.randrange(1, 256)
        return bytes(out), f"flip {k} bytes at {pos[:4]}"
    if op == "shift":
        p = rng.randrange(4, he)
        n = rng.choice([1, 2, 4, 8])
        if rng.random() < 0.5:
            del out[p:p + n]
            return bytes(out), f"delete {n} bytes at {p}"
        out[p:p] = bytes(rng.randrange(256) for _ in range(n))
        return bytes(out), f"insert {n} bytes at {p}"
    T = info["tensors"]
    if op == "offset" and T:
        tstart, off_pos, off, dims, typ = rng.choice(T)
        other = rng.choice(T)[2]
        v = rng.choice([0, off + 1, off + info["align"] // 2, other, other + 1, len(b), len(b) - info["data_start"],
                        1 << 40, (1 << 64) - 1, (1 << 63), off - info["align"] if off >= info["align"] else 1])
        put(off_pos, 8, v % (1 << 64))
        return bytes(out), f"tensor offset@{off_pos} {off}->{v}"
    if op == "dims" and T:
        f = pick(("dim", "n_dims"))
        kind, off, size, _ = f
        if kind == "n_dims":
            v = rng.choice([0, 1, 3, 4, 5, 8, 255, 0xFFFFFFFF])
            put(off, 4, v)
        else:
            v = rng.choice([0, 1, -1, 2, 3, 31, 33, 255, 257, 1 << 31, 1 << 32, 1 << 40, (1 << 62), (1 << 63) - 1,
                            -(1 << 63)])
            put(off, 8, v)
        return bytes(out), f"{kind}@{off} -> {v}"
    if op == "type" and T:
        f = pick(("tensor_type",))
        v = rng.choice(list(range(0, 45)) + [255, 1 << 16, 0xFFFFFFFF])
        put(f[1], 4, v)
        return bytes(out), f"tensor_type@{f[1]} -> {v}"
    # several mutations at once
    desc = []
    cur = bytes(out)
    for _ in range(rng.choice([2, 3])):
        try:
            cur, d = mutate_gguf(cur, rng)
        except Exception:           # the walk of an already-mutated file failed: flip instead
            p = rng.randrange(0, max(1, min(len(cur), he)))
            cur = cur[:p] + bytes([cur[p] ^ 0xFF]) + cur[p + 1:] if cur else cur
            d = f"flip@{p}"
        desc.append(d)
    return cur, "multi: " + "; ".join(desc)


# ================================================================ safetensors

def mutate_safetensors(b: bytes, rng: random.Random) -> tuple[bytes, str]:
    n = struct.unpack_from("<Q", b, 0)[0]
    head, data = b[8:8 + n], b[8 + n:]
    op = rng.choices(["len", "json", "jsonflip", "jsontrunc", "filetrunc"], [15, 50, 15, 10, 10])[0]
    if op == "len":
        v = rng.choice([0, 1, 2, n - 1, n + 1, n + 8, len(b), len(b) - 8, 1 << 32, 1 << 62, (1 << 64) - 1])
        return struct.pack("<Q", v % (1 << 64)) + b[8:], f"header length {n}->{v}"
    if op == "jsonflip":
        h = bytearray(head)
        ps = [rng.randrange(len(h)) for _ in range(rng.choice([1, 2, 4]))]
        for p in ps:
            h[p] = rng.choice(b'{}[]":,0123456789-eE. \x00\xff')
        return struct.pack("<Q", n) + bytes(h) + data, f"json flip at {ps}"
    if op == "jsontrunc":
        k = rng.randrange(0, n)
        return struct.pack("<Q", k) + head[:k] + data, f"json truncated to {k}"
    if op == "filetrunc":
        k = rng.randrange(0, len(b))
        return b[:k], f"file truncated {len(b)}->{k}"
    j = json.loads(head)
    names = [k for k in j if k != "__metadata__"]
    name = rng.choice(names)
    e = j[name]
    what = rng.choice(["dtype", "shape", "shape_len", "offsets", "remove", "rename", "metadata", "type"])
    if what == "dtype":
        e["dtype"] = rng.choice(["F64", "I8", "BOOL", "F8_E4M3", "XX", "", 5, None])
    elif what == "shape":
        if e["shape"]:
            e["shape"][rng.randrange(len(e["shape"]))] = rng.choice([0, -1, 1, 1 << 31, 1 << 62, 10 ** 30, "a", 1.5, None])
    elif what == "shape_len":
        e["shape"] = rng.choice([[], [1], e["shape"] + [1], e["shape"] + [2], e["shape"][::-1], "x"])
    elif what == "offsets":
        a, z = e["data_offsets"]
        other = j[rng.choice(names)]["data_offsets"]
        e["data_offsets"] = rng.choice([[z, a], [a, z + 1], [a, z - 1], [a + 1, z + 1], [a, 1 << 63], [-1, z], [a],
                                        [a, len(data) + 64], other, [0, 0], "x", [a, 10 ** 30]])
    elif what == "remove":
        del j[name]
    elif what == "rename":
        j[name + rng.choice([".x", "", "\u0000"])] = j.pop(name) if rng.random() < 0.5 else e
    elif what == "metadata":
        j["__metadata__"] = rng.choice([None, 5, [1], {"format": 7}, "pt"])
    else:
        j[name] = rng.choice([None, 5, "x", [], {}])
    h = json.dumps(j).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data, f"json {what} of {name}"


# ================================================================ cases

GGUF_SEEDS = [("tiny-q8_0", 30), ("tiny-q4_k_m", 25), ("header-heavy", 25), ("pipeline-q8_0", 6)]
if os.environ.get("FUZZ_NO_PIPELINE"):      # a quicker campaign without the 128k-vocabulary file
    GGUF_SEEDS = GGUF_SEEDS[:-1]
COMMANDS = {
    "info": (lambda i, o: ["info", i], 35),
    "run": (lambda i, o: ["run", i, "-p", "hello there", "-n", "1", "--temp", "0", "-t", "1"], 30),
    "quantize": (lambda i, o: ["quantize", "--allow-requantize", i, str(o / "out.gguf"), "Q4_0", "1"], 20),
    "dequantize": (lambda i, o: ["dequantize", i, str(o / "out.gguf"), "--outtype", "f32", "--threads", "1"], 15),
}
CONVERT_SHARE = 0.14


def plan_case(seed: int, i: int, seeds: dict[str, Path]) -> dict:
    """Case i of a campaign: the mutated input (bytes) and the command (deterministic)."""
    rng = random.Random(seed * 1_000_003 + i)
    if rng.random() < CONVERT_SHARE:
        shards = sorted(Path(seeds["checkpoint"]).glob("*.safetensors"))
        victim = rng.choice(shards)
        data, desc = mutate_safetensors(victim.read_bytes(), rng)
        return {"i": i, "seed_file": f"checkpoint/{victim.name}", "mutation": desc, "kind": "safetensors",
                "victim": victim.name, "data": data, "cmd": "convert"}
    name = rng.choices([s for s, _ in GGUF_SEEDS], [w for _, w in GGUF_SEEDS])[0]
    cmds = ["info", "quantize", "dequantize"] if name in ("header-heavy", "pipeline-q8_0") else list(COMMANDS)
    cmd = rng.choices(cmds, [COMMANDS[c][1] for c in cmds])[0]
    data, desc = mutate_gguf(Path(seeds[name]).read_bytes(), rng)
    return {"i": i, "seed_file": name, "mutation": desc, "kind": "gguf", "data": data, "cmd": cmd}


def run_case(case: dict, seeds: dict[str, Path], work: Path, verbose: bool = False) -> dict:
    """Write the mutated input, run the command in-process, classify the outcome."""
    from ggufkit.cli import main
    cdir = work / f"case{case['i']}"
    shutil.rmtree(cdir, ignore_errors=True)
    out_dir = cdir / "out"
    out_dir.mkdir(parents=True)
    if case["kind"] == "safetensors":
        ck = cdir / "ckpt"
        shutil.copytree(seeds["checkpoint"], ck)
        (ck / case["victim"]).write_bytes(case["data"])
        argv = ["convert", str(ck), "-o", str(out_dir / "out.gguf"), "--outtype", "f16"]
        size = len(case["data"])
    else:
        inp = cdir / "in.gguf"
        inp.write_bytes(case["data"])
        argv = COMMANDS[case["cmd"]][0](str(inp), out_dir)
        size = len(case["data"])
    so, se = io.StringIO(), io.StringIO()
    verdict, detail, code = "ok", "", 0
    _set_mem_limit(None if case.get("recompiled") else size)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except MemoryError:
        verdict, detail = "alloc", "MemoryError: " + _where()
        if "/numba/" in _where(inside_repo=False) and not case.get("recompiled"):
            # a kernel compiling for a new type/array flavour under the limit: not the input's doing
            _set_mem_limit(None)
            return run_case({**case, "recompiled": True}, seeds, work, verbose)
    except BaseException as e:     # noqa: BLE001 - a fuzzer counts everything
        verdict, detail = "traceback", f"{type(e).__name__}: {str(e)[:200]} @ {_where()}"
    finally:
        _set_mem_limit(None)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    err = se.getvalue()
    if verdict == "ok" and code != 0:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if code in (1, 2) and last.startswith("error: ") and "Traceback" not in err:
            verdict, detail = "reject", last[:300]
        else:
            verdict, detail = "traceback", f"exit {code}: {last[:300]}"
    left = sorted(p.name for p in out_dir.iterdir())
    if verdict == "ok":
        left = [x for x in left if x != "out.gguf"]
    if left and verdict not in ("traceback", "alloc"):
        verdict, detail = "left", f"{left} after {verdict}: {detail}"
    if verbose:
        sys.__stderr__.write(f"argv: {argv}\nstdout: {so.getvalue()[-2000:]}\nstderr: {err[-3000:]}\n")
    shutil.rmtree(cdir, ignore_errors=True)
    return {"i": case["i"], "seed_file": case["seed_file"], "mutation": case["mutation"], "cmd": case["cmd"],
            "verdict": verdict, "detail": detail, "s": round(dt, 3), "cpu": round(cpu, 3)}


def _where(inside_repo: bool = True) -> str:
    """The innermost frame of the current exception (inside the repository), as file:line."""
    tb = traceback.extract_tb(sys.exc_info()[2])
    inside = [f for f in tb if inside_repo and str(REPO) in f.filename and "tools/conformance/fuzz_inputs.py" not in f.filename]
    f = (inside or tb)[-1]
    return f"{os.path.relpath(f.filename, REPO)}:{f.lineno} ({f.name})"


_BASE_AS = None


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _set_mem_limit(file_size: int | None) -> None:
    """RLIMIT_AS: the worker's current size + max(256 MiB, 16 x the input); None lifts it."""
    import resource
    if _BASE_AS is None:
        return
    if file_size is None:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    else:
        lim = _vm_size() + max(256 << 20, 16 * file_size)
        resource.setrlimit(resource.RLIMIT_AS, (lim, resource.RLIM_INFINITY))


# ================================================================ worker / driver

def worker(args) -> None:
    """Read case numbers on stdin, answer one JSON line each on stdout."""
    global _BASE_AS
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    seeds = make_seeds(Path(args.workdir) / "seeds")
    work = Path(args.workdir) / f"w{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    # warm up every command on the unmutated seeds (imports, Numba, thread pools) before limits
    for cmd in COMMANDS:
        sys.stderr.write(f"warm-up {cmd}\n")
        run_case({"i": -1, "seed_file": "tiny-q8_0", "mutation": "none", "kind": "gguf", "cmd": cmd,
                  "data": Path(seeds["tiny-q8_0"]).read_bytes()}, seeds, work)
    warm_kernels()
    _BASE_AS = _vm_size() if args.mem_limit else None
    out = os.fdopen(os.dup(1), "w")              # the protocol; fd 1 itself goes to /dev/null so
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing printed by native code can corrupt it
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        i = int(line)
        res = run_case(plan_case(args.seed, i, seeds), seeds, work)
        out.write(json.dumps(res) + "\n")
        out.flush()
    shutil.rmtree(work, ignore_errors=True)


def warm_kernels() -> None:
    """Load (or compile, once: Numba caches on disk) every type's kernels, so that a mutated type id
    does not make a case look like a hang: runtime matmul (decode and prefill) and get_rows, and
    quant's dequantize, for every type with a block layout."""
    import numpy as np
    import quant
    from runtime import backend as B
    from runtime.qtensor import QTensor
    for t in quant.TYPES.values() if isinstance(quant.TYPES, dict) else quant.TYPES:
        name = t.name
        try:
            n_in = 256 * max(1, t.block_size // 256) if t.block_size > 1 else 256
            if n_in % t.block_size:
                n_in = t.block_size * 8
            data = np.zeros((4, quant.row_size(name, n_in)), np.uint8)
        except Exception:   # noqa: BLE001 - a type without a layout
            continue
        ro = data.view()
        ro.flags.writeable = False       # the flavour a memory-mapped file gives (its own Numba specialization)
        for fn in (lambda: B.CPU.matmul(QTensor(data, name, (4, n_in)), np.ones((1, n_in), np.float32)),
                   lambda: B.CPU.matmul(QTensor(data, name, (4, n_in)), np.ones((40, n_in), np.float32)),
                   lambda: B.CPU.get_rows(QTensor(data, name, (4, n_in)), np.array([0, 3])),
                   lambda: quant.dequantize(data, name), lambda: quant.dequantize(ro, name, nthreads=1),
                   lambda: quant.dequantize(ro, name)):
            try:
                fn()
            except Exception:   # noqa: BLE001 - unsupported here; the fuzz cases will say how
                pass
    for t in ("Q4_0", "Q8_0"):       # what the quantize cases write
        quant.quantize(np.ones((4, 256), np.float32), t, nthreads=1)
        quant.quantize(np.ones((4, 256), np.float32), t)


def _start_worker(args):
    cmd = [sys.executable, __file__, "--worker", "--seed", str(args.seed), "--workdir", str(args.workdir)]
    if not args.mem_limit:
        cmd.append("--no-mem-limit")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MALLOC_ARENA_MAX": "2"}
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, bufsize=1, env=env, cwd=REPO)
    line = p.stdout.readline()          # waits for seeds and warm-up
    if line.strip() != "ready":
        raise RuntimeError(f"fuzz worker failed to start (exit {p.poll()})")
    return p


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answer(p, timeout: float) -> str:
    """The worker's next line, or "" once the case has used more than ``timeout`` s of CPU (a busy
    hang; CPU time, so that a loaded machine does not fake one) or 6 x timeout of wall time (a
    blocked one)."""
    cpu0, t0 = _cpu_seconds(p.pid), time.time()
    while True:
        ready, _, _ = select.select([p.stdout], [], [], 0.5)
        if ready:
            return p.stdout.readline()
        try:
            cpu = _cpu_seconds(p.pid) - cpu0
        except (OSError, IndexError):
            return ""
        if cpu > timeout or time.time() - t0 > 6 * timeout:
            return ""


def campaign(args, cases: list[int], log=None) -> list[dict]:
    """Run cases in a worker; a case without an answer in args.timeout s is a hang (worker restarted)."""
    results, p = [], None
    seeds = make_seeds(Path(args.workdir) / "seeds")
    try:
        for i in cases:
            for attempt in (1, 2):    # no answer: retry once in a fresh worker (cold Numba compiles,
                if p is None or p.poll() is not None:        # load spikes); twice is a hang
                    p = _start_worker(args)
                p.stdin.write(f"{i}\n")
                p.stdin.flush()
                line = _answer(p, args.timeout)
                if line:
                    res = json.loads(line)
                    if attempt == 2:
                        res["detail"] = (res["detail"] + " (answered on the retry)").strip()
                    break
                code = p.poll()
                p.kill()
                p.wait()
                p = None
                try:
                    plan = plan_case(args.seed, i, seeds)
                except Exception:   # noqa: BLE001
                    plan = {"cmd": None, "mutation": None, "seed_file": None}
                res = {"i": i, "verdict": "hang" if code is None else "traceback",
                       "detail": f"over {args.timeout} CPU s (or {6 * args.timeout} s wall), twice" if code is None
                       else f"worker died with status {code}", "cmd": plan["cmd"], "mutation": plan["mutation"],
                       "seed_file": plan["seed_file"]}
                if code is not None:
                    break
            results.append(res)
            if log:
                log(res)
    finally:
        if p is not None:
            p.stdin.close()
            p.wait(timeout=60)
    return results


def summarize(results: list[dict]) -> dict:
    c = Counter(r["verdict"] for r in results)
    by_cmd, secs, cpus = defaultdict(Counter), defaultdict(list), defaultdict(list)
    for r in results:
        by_cmd[r.get("cmd") or "?"][r["verdict"]] += 1
        if "s" in r:
            secs[r.get("cmd") or "?"].append(r["s"])
            cpus[r.get("cmd") or "?"].append(r.get("cpu", 0.0))
    bad = defaultdict(list)
    for r in results:
        if r["verdict"] in BAD:
            key = r["verdict"] + ": " + (r["detail"].split(" @ ")[-1] if " @ " in r["detail"] else r["detail"][:120])
            bad[key].append(r["i"])
    return {"cases": len(results), "verdicts": {v: c.get(v, 0) for v in VERDICTS},
            "by_command": {k: dict(v) for k, v in sorted(by_cmd.items())},
            "mean_seconds": {k: round(sum(v) / len(v), 3) for k, v in sorted(secs.items())},
            "mean_cpu_seconds": {k: round(sum(v) / len(v), 3) for k, v in sorted(cpus.items())},
            "findings": {k: {"count": len(v), "cases": v[:10]} for k, v in sorted(bad.items(), key=lambda kv: -len(kv[1]))}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--case", type=int, help="replay one case in this process, verbosely")
    ap.add_argument("--timeout", type=float, default=10.0, help="CPU seconds before a case counts as a hang")
    ap.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "ggufkit-fuzz"))
    ap.add_argument("--report", help="write the summary and every non-ok case here (JSON)")
    ap.add_argument("--no-mem-limit", dest="mem_limit", action="store_false")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.case is not None:
        seeds = make_seeds(Path(args.workdir) / "seeds")
        case = plan_case(args.seed, args.case, seeds)
        print(json.dumps(run_case(case, seeds, Path(args.workdir) / "replay", verbose=True), indent=1))
        return 0
    t0 = time.time()
    n = [0]

    def log(r):
        n[0] += 1
        if r["verdict"] in BAD or args.verbose:
            print(json.dumps(r), flush=True)
        if n[0] % 500 == 0:
            print(f"# {n[0]} cases, {time.time() - t0:.0f} s", flush=True)
    results = campaign(args, list(range(args.start, args.start + args.cases)), log)
    s = summarize(results)
    s.update(seed=args.seed, start=args.start, seconds=round(time.time() - t0, 1))
    print(json.dumps({k: v for k, v in s.items()}, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps({**s, "bad": [r for r in results if r["verdict"] in BAD]}, indent=1) + "\n")
    return 1 if any(s["verdicts"][v] for v in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
