"""Load the CUDA kernel sources under runtime/cuda/ for a GPU (CuPy) or for CPU emulation (g++).

    mod = load("elementwise")                    # once per source; cached in-process
    k = mod.get_function("rms_norm_f32")
    k((n_rows,), (256,), (x, w, y, np.int32(n), np.float32(eps)), shared_mem=0)

The same call works on both sides, like ``cupy.RawKernel``: ``grid``/``block`` are ints or
tuples, ``args`` are device arrays (numpy arrays under emulation, CuPy arrays on a GPU; None
for a null pointer) and numpy scalars whose dtype matches the kernel's parameter exactly
(``np.int32`` for ``int``, ``np.float32`` for ``float``...). Python ints and floats are refused:
CuPy would pass them as 64-bit values and the kernel would read garbage.

Every ``.cu`` source gets ``common.cuh`` prepended, and the text of each ``#include "x.cuh"``
(a header beside it, e.g. quants.cu's generated iq_tables.cuh) in place: no include paths are
needed. Kernels callable from Python are declared ``extern "C" __global__ void name(...)``,
written out or instantiated over an X-macro list (``expand_macros``).

GPU: ``cupy.RawModule(code=..., options=("-std=c++17",))``; CuPy compiles with NVRTC for the
device's arch and caches the cubin on disk; we keep one RawModule per source in-process.

Emulation (``GGUFKIT_CUDA_EMULATE=1`` or ``set_emulation(True)``): the source is compiled with
g++ against ``emu/cuda_emu.h`` into ``~/.cache/ggufkit/cuda-emu/<hash>.so`` with one generated
launch wrapper per kernel (args as ``void**``, as for cuLaunchKernel), called through ctypes.
Each CUDA thread is a fiber; see ``emu/cuda_emu.h`` for what is checked. ``emu_options`` picks, for
the launches inside it, the thread and block orders (forward, reverse, random with a seed), the
out-of-bounds guard, the race check (a second build with g++'s thread-sanitizer instrumentation),
and NVRTC's FMA contraction and flush-to-zero (on by default, as CuPy compiles).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import ModelError

CUDA_DIR = Path(__file__).resolve().parent
EMU_HEADER = CUDA_DIR / "emu" / "cuda_emu.h"
COMMON_HEADER = CUDA_DIR / "common.cuh"
MAX_THREADS_PER_BLOCK = 1024
MAX_SHARED_PER_BLOCK = 48 * 1024   # without cudaFuncSetAttribute opt-in, on every arch we build for


class CudaError(ModelError):
    """No CuPy / no GPU / driver too old / no g++, a bad launch, or an error seen by the emulator."""


# ---------------------------------------------------------------- mode

_EMULATE: bool | None = None


def set_emulation(on: bool | None) -> None:
    """Force emulation on or off for this process; None: follow GGUFKIT_CUDA_EMULATE."""
    global _EMULATE
    _EMULATE = on


def emulating() -> bool:
    if _EMULATE is not None:
        return _EMULATE
    return os.environ.get("GGUFKIT_CUDA_EMULATE", "") not in ("", "0")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ggufkit" / "cuda-emu"


def _label(name: str) -> str:
    return Path(name).name if str(name).endswith(".cu") else f"{name}.cu"


def list_sources() -> list[str]:
    """Names of the kernel sources (runtime/cuda/NAME.cu)."""
    return sorted(p.stem for p in CUDA_DIR.glob("*.cu"))


_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"(\w+\.cuh)"[^\n]*$', re.M)


def source(name: str) -> str:
    """The text compiled for ``name``: common.cuh, then NAME.cu with the text of each header it
    includes (``#include "x.cuh"``, from runtime/cuda/) in place (with #line so errors point at
    the file and line they come from). NVRTC (through CuPy) and g++ then need no include paths."""
    path = Path(name) if str(name).endswith(".cu") else CUDA_DIR / f"{name}.cu"
    if not path.is_file():
        raise CudaError(f"no CUDA source {path.name} in {path.parent}")
    text = path.read_text()

    def include(m):
        header = CUDA_DIR / m[1]
        if not header.is_file():
            raise CudaError(f"{path.name} includes {m[1]}, which is not in {CUDA_DIR}")
        line = text.count("\n", 0, m.start()) + 2
        return f'#line 1 "{m[1]}"\n{header.read_text()}\n#line {line} "{path.name}"'

    return (f'#line 1 "common.cuh"\n{COMMON_HEADER.read_text()}\n'
            f'#line 1 "{path.name}"\n{_INCLUDE_RE.sub(include, text)}')


# ---------------------------------------------------------------- kernel signatures

@dataclass(frozen=True)
class Param:
    name: str
    base: str          # "float", "f16", "block_q4_K", ...
    pointer: bool
    const: bool = False   # a pointer to const (the race check tracks only what a kernel may write)

    def __post_init__(self):
        # what an argument for this parameter may be, precomputed for the per-launch check
        want = _POINTEE.get(self.base) if self.pointer else None
        object.__setattr__(self, "ok_dtypes", frozenset(np.dtype(d) for d in want) if want else None)
        object.__setattr__(self, "scalar_type", None if self.pointer else _SCALAR[self.base])

    def scalar_dtype(self) -> np.dtype:
        return np.dtype(_SCALAR[self.base])


_SCALAR = {
    "int": np.int32, "i32": np.int32, "int32_t": np.int32, "signed": np.int32, "signed int": np.int32,
    "unsigned": np.uint32, "unsigned int": np.uint32, "u32": np.uint32, "uint32_t": np.uint32,
    "float": np.float32, "double": np.float64,
    "long long": np.int64, "long long int": np.int64, "i64": np.int64, "int64_t": np.int64,
    "unsigned long long": np.uint64, "u64": np.uint64, "uint64_t": np.uint64, "size_t": np.uint64,
    "short": np.int16, "unsigned short": np.uint16, "f16": np.uint16, "bf16": np.uint16,
    "char": np.int8, "signed char": np.int8, "i8": np.int8, "unsigned char": np.uint8, "u8": np.uint8,
    "uint8_t": np.uint8, "int8_t": np.int8, "bool": np.bool_,
}
# pointer base type -> dtypes an array passed for it may have (absent: any dtype, e.g. block structs)
_POINTEE = {
    "float": ("float32",), "double": ("float64",),
    "int": ("int32",), "i32": ("int32",), "int32_t": ("int32",),
    "unsigned": ("uint32",), "unsigned int": ("uint32",), "u32": ("uint32",), "uint32_t": ("uint32",),
    "f16": ("float16", "uint16"), "bf16": ("uint16",), "unsigned short": ("uint16", "float16"),
    "short": ("int16",), "long long": ("int64",), "i64": ("int64",), "int64_t": ("int64",),
    "unsigned long long": ("uint64",), "u64": ("uint64",), "uint64_t": ("uint64",),
    "signed char": ("int8",), "i8": ("int8",), "int8_t": ("int8",),
}

_KERNEL_RE = re.compile(
    r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+'
    r'(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)')
_QUALIFIERS = {"const", "volatile", "__restrict__", "__restrict", "struct"}


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


_DEFINE_RE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)\(([\w\s,]*)\)(.*)$", re.M)
_CALL_RE = re.compile(r"\b(\w+)\(([^()]*)\)")
_TOP_CALL_RE = re.compile(r"^(\w+)\(([^()]*)\)[ \t]*;?[ \t]*$", re.M)
_DEFINE_LINE_RE = re.compile(r"^[ \t]*#[ \t]*define\b.*$", re.M)


def expand_macros(src: str) -> str:
    """``src`` without comments and #defines, its top-level lines of function-like macro calls
    expanded: a kernel template ``#define K(name) extern "C" __global__ void k_##name(...) {...}``
    applied to an X-macro list ``#define TYPES(X) X(a) X(b)`` by the line ``TYPES(K)`` becomes
    the kernels k_a and k_b. As much of the C preprocessor as that takes: parameters (empty ones
    too), ``##`` pasting, rescanning the result (no ``#`` stringizing, no object-like macros);
    the compilers do the real expansion, and tests/runtime/cuda/test_cuda_compile.py checks both see the
    same kernels."""
    src = _strip_comments(src).replace("\\\n", " ")
    macros = {m[1]: ([p.strip() for p in m[2].split(",") if p.strip()], m[3]) for m in _DEFINE_RE.finditer(src)}

    def call(m, depth=0):
        if m[1] not in macros or depth > 16:
            return m[0]
        params, body = macros[m[1]]
        args = [a.strip() for a in m[2].split(",")] if m[2].strip() else []
        if len(args) != len(params):
            raise CudaError(f"macro {m[1]}: {len(args)} arguments for {len(params)} parameters")
        sub = dict(zip(params, args))
        body = re.sub(r"\s*##\s*", "##", re.sub(r"\b\w+\b", lambda t: sub.get(t[0], t[0]), body))
        return _CALL_RE.sub(lambda c: call(c, depth + 1), body.replace("##", "")) + "\n"

    return _DEFINE_LINE_RE.sub("", _TOP_CALL_RE.sub(call, src))


def parse_kernels(src: str) -> dict[str, list[Param]]:
    """extern "C" __global__ kernels in a source (macro-instantiated ones included, see
    expand_macros) -> their parameters, in order."""
    out = {}
    for m in _KERNEL_RE.finditer(expand_macros(src)):
        params = []
        for raw in filter(None, (p.strip() for p in m.group(2).split(","))):
            if raw == "void":
                continue
            text = raw.replace("*", " * ")
            toks = [t for t in text.split() if t not in _QUALIFIERS]
            ptr = toks.count("*")
            toks = [t for t in toks if t != "*"]
            if len(toks) < 2 or ptr > 1:
                raise CudaError(f"kernel {m.group(1)}: cannot read parameter {raw!r}")
            star = raw.find("*")
            p = Param(toks[-1], " ".join(toks[:-1]), ptr == 1, ptr == 1 and "const" in raw[:star].split())
            if not p.pointer and p.base not in _SCALAR:
                raise CudaError(f"kernel {m.group(1)}: parameter {raw!r}: pass structs by pointer")
            params.append(p)
        out[m.group(1)] = params
    return out


def _dims(v, what) -> tuple[int, int, int]:
    if type(v) is int and 0 < v:
        return (v, 1, 1)
    t = (int(v),) if isinstance(v, (int, np.integer)) else tuple(int(x) for x in v)
    if not 1 <= len(t) <= 3 or any(x < 1 for x in t):
        raise CudaError(f"bad {what} {v!r}: 1 to 3 positive sizes")
    return t + (1,) * (3 - len(t))


# ---------------------------------------------------------------- emulation options

@dataclass(frozen=True)
class EmuOptions:
    order: str = "forward"    # thread order: forward | reverse | random
    seed: int = 0
    guard: bool = False       # copy arrays between 0xFF pads; fail on writes outside them
    stack_kib: int = 64
    blocks: str = "random"    # block order (seeded by `seed`): forward | reverse | random
    race: bool = False        # race check (a -fsanitize=thread build; see emu/cuda_emu.h)
    ftz: bool = True          # f32 denormals flush to zero, as CuPy's -ftz=true
    fmad: bool = True         # a*b+c contracted into FMAs where g++ chooses, as NVRTC's default -fmad=true

    def __post_init__(self):
        if self.order not in _ORDERS:
            raise CudaError(f"unknown thread order {self.order!r} (forward, reverse, random)")
        if self.blocks not in _ORDERS:
            raise CudaError(f"unknown block order {self.blocks!r} (forward, reverse, random)")

    def flags(self) -> int:
        return _ORDERS[self.blocks] | (4 if self.ftz else 0) | (8 if self.race else 0)


_ORDERS = {"forward": 0, "reverse": 1, "random": 2}
_local = threading.local()


def _env_opts() -> EmuOptions:
    """Defaults from the environment, so whole runs can be repeated in another order or with the
    checks: GGUFKIT_CUDA_EMU_ORDER=forward|reverse|random, GGUFKIT_CUDA_EMU_BLOCKS=(the same),
    GGUFKIT_CUDA_EMU_SEED=N, GGUFKIT_CUDA_EMU_GUARD=1, GGUFKIT_CUDA_EMU_RACE=1,
    GGUFKIT_CUDA_EMU_FTZ=0, GGUFKIT_CUDA_EMU_FMAD=0."""
    env = os.environ

    def on(k, default):
        return env.get(k, default) not in ("", "0")
    try:
        return EmuOptions(order=env.get("GGUFKIT_CUDA_EMU_ORDER", "forward"),
                          blocks=env.get("GGUFKIT_CUDA_EMU_BLOCKS", "random"),
                          seed=int(env.get("GGUFKIT_CUDA_EMU_SEED", "0")),
                          guard=on("GGUFKIT_CUDA_EMU_GUARD", ""), race=on("GGUFKIT_CUDA_EMU_RACE", ""),
                          ftz=on("GGUFKIT_CUDA_EMU_FTZ", "1"), fmad=on("GGUFKIT_CUDA_EMU_FMAD", "1"))
    except ValueError:
        raise CudaError("GGUFKIT_CUDA_EMU_SEED must be an integer") from None


def _emu_opts() -> EmuOptions:
    return getattr(_local, "opts", None) or _env_opts()


@contextlib.contextmanager
def emu_options(**kw):
    """``with emu_options(order="random", seed=3, guard=True): ...`` for emulated launches."""
    saved = getattr(_local, "opts", None)
    _local.opts = EmuOptions(**{**_emu_opts().__dict__, **kw})
    try:
        yield _local.opts
    finally:
        _local.opts = saved


# ---------------------------------------------------------------- launch checks (both sides)

def _check_launch(name, params, grid, block, args, shared_mem, is_array):
    g, b = _dims(grid, "grid"), _dims(block, "block")
    if b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK:
        raise CudaError(f"kernel {name}: block {b} has more than {MAX_THREADS_PER_BLOCK} threads")
    if g[1] > 65535 or g[2] > 65535 or g[0] > 2**31 - 1:
        raise CudaError(f"kernel {name}: grid {g} too large")
    if not 0 <= int(shared_mem) <= MAX_SHARED_PER_BLOCK:
        raise CudaError(f"kernel {name}: {shared_mem} bytes of dynamic shared memory (max {MAX_SHARED_PER_BLOCK})")
    if len(args) != len(params):
        raise CudaError(f"kernel {name}: {len(args)} arguments for {len(params)} parameters "
                        f"({', '.join(p.name for p in params)})")
    for i, (p, a) in enumerate(zip(params, args)):
        if p.pointer:
            if a is None:
                continue
            if not is_array(a):
                raise CudaError(f"kernel {name} argument {i} ({p.name}): expected a device array, got {type(a).__name__}")
            if p.ok_dtypes is not None and a.dtype not in p.ok_dtypes:
                want = "/".join(sorted(d.name for d in p.ok_dtypes))
                raise CudaError(f"kernel {name} argument {i} ({p.name}): {p.base}* needs {want}, got {a.dtype}")
            if not a.flags.c_contiguous:
                raise CudaError(f"kernel {name} argument {i} ({p.name}): array is not C-contiguous")
        elif type(a) is not p.scalar_type:
            want = p.scalar_dtype()
            got = a.dtype if isinstance(a, np.generic) else type(a).__name__
            raise CudaError(f"kernel {name} argument {i} ({p.name}): {p.base} needs np.{want.name}, got {got}")
    return g, b


# ---------------------------------------------------------------- emulated modules

_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([\w\s]+?)\s*"
                            r"(?:__align__\s*\(\s*\d+\s*\)\s*)?(\w+)\s*\[\s*\]\s*;")


# `__shared__ [__align__(n)] T a[N][M], b[K];` (static shared memory; not in comments' prose)
_STATIC_SHARED = re.compile(r"(?<![\w/])__shared__\s+(?:__align__\s*\(\s*(\d+)\s*\)\s*)?"
                            r"((?:unsigned\s+|signed\s+|const\s+)*[A-Za-z_]\w*(?:\s*::\s*\w+)*)\s+"
                            r"(\w+\s*(?:\[[^\];]*\]\s*)*(?:,\s*\w+\s*(?:\[[^\];]*\]\s*)*)*);")
_DECLARATOR = re.compile(r"(\w+)\s*((?:\[[^\];]*\]\s*)*)")


def _static_shared(m) -> str:
    """One static __shared__ declaration as references into the emulator's per-launch arena."""
    align, typ = m.group(1), m.group(2)
    out = []
    for d in _DECLARATOR.finditer(m.group(3)):
        name, dims = d.group(1), d.group(2).strip()
        al = f"alignof({typ}) > {align} ? alignof({typ}) : {align}" if align else f"alignof({typ})"
        out.append(f"static char emu_key_{name}; {typ} (&{name}){dims} = *({typ}(*){dims})::emu::static_shared("
                   f"&emu_key_{name}, sizeof({typ}{dims}), {al}, \"{name}\");")
    return " ".join(out)


def emu_source(name: str, arch: int = 800) -> str:
    """The C++ translation unit g++ compiles for ``name`` (kernels plus launch wrappers)."""
    src = source(name)
    kernels = parse_kernels(src)
    src = _EXTERN_SHARED.sub(lambda m: f"{m.group(1)}* {m.group(2)} = ({m.group(1)}*)::emu::dyn_smem();", src)
    src = _STATIC_SHARED.sub(_static_shared, src)
    wrappers = "".join(
        f'extern "C" int emu_launch_{k}(const unsigned* dims, size_t smem, int order, unsigned long long seed, '
        f"size_t stack_kib, unsigned flags, void** args) {{\n"
        f"    return ::emu::launch_kernel(&{k}, dims, smem, order, seed, stack_kib, flags, args);\n}}\n"
        for k in kernels)
    return (f"#define __CUDA_ARCH__ {arch}\n#include \"{EMU_HEADER}\"\n{src}\n"
            f"#line 1 \"<emu wrappers>\"\n{wrappers}")


def _gxx() -> str:
    gxx = os.environ.get("CXX") or shutil.which("g++")
    if not gxx:
        raise CudaError("CUDA emulation needs g++ (apt install g++), and none was found on PATH")
    return gxx


_GXX_FLAGS = ("-O1", "-std=c++17", "-fPIC", "-fno-strict-aliasing", "-w",
              "-U_FORTIFY_SOURCE",   # longjmp between fiber stacks: no __longjmp_chk
              # a load or store misaligned for its type traps (the GPU faults on it; x86 does not)
              "-fsanitize=alignment", "-fsanitize-undefined-trap-on-error")
# NVRTC's default -fmad=true: g++ forms FMAs only at -O2's expensive optimizations, with FMA
# instructions available
_FMAD_FLAGS = ("-ffp-contract=fast", "-fexpensive-optimizations", "-mfma")
_NO_FMAD_FLAGS = ("-ffp-contract=off",)
# the race check: g++ puts a __tsan_* call before every load and store; emu/cuda_emu.h defines
# them (no libtsan: the object is linked without -fsanitize=thread)
_RACE_FLAGS = ("-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0", "-DGGUFKIT_EMU_RACE=1")


def cpu_has_fma() -> bool:
    """Whether this CPU has FMA instructions (the emulated -fmad=true needs them)."""
    try:
        return " fma " in f" {Path('/proc/cpuinfo').read_text().replace(chr(10), ' ')} "
    except OSError:
        return False


def _build_emu(name: str, arch: int, fmad: bool = True, race: bool = False) -> Path:
    text = emu_source(name, arch)
    gxx = _gxx()
    flags = [*_GXX_FLAGS, *(_FMAD_FLAGS if fmad and cpu_has_fma() else _NO_FMAD_FLAGS), *(_RACE_FLAGS if race else ())]
    ver = subprocess.run([gxx, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    key = hashlib.sha256("\0".join([text, EMU_HEADER.read_text(), ver, *flags]).encode()).hexdigest()[:24]
    out = cache_dir() / f"{Path(name).stem}-{key}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        cpp = Path(tmp) / f"{Path(name).stem}.cpp"
        cpp.write_text(text)
        obj, so = Path(tmp) / "k.o", Path(tmp) / "k.so"
        r = subprocess.run([gxx, *flags, "-c", "-o", str(obj), str(cpp)], capture_output=True, text=True)
        if not r.returncode:   # linked without -fsanitize=thread: no libtsan
            r = subprocess.run([gxx, "-shared", "-fPIC", "-o", str(so), str(obj)], capture_output=True, text=True)
        if r.returncode:
            err = "\n".join(r.stderr.strip().splitlines()[:30])
            raise CudaError(f"g++ could not compile {_label(name)} for emulation:\n{err}")
        os.replace(so, out)
    return out


# ---------------------------------------------------------------- emulated streams
# Under emulation every launch runs at once, in program order, so work on two streams is always
# ordered. To show code that forgets to order a second stream after the default one (graph
# capture and replay on the backend's own stream after uploads, a KV-cache memset or a prefill on
# the default stream), the emulator counts the work queued on the default stream (launches,
# device allocations and copies: ``emu_default_work``) and a launch inside ``with`` an emulated
# second stream (runtime.cuda.graph.EmuStream) is a CudaError unless that stream waited for all
# of it (``stream.wait_event(EmuEvent)``) or the host synchronised the device since.

_EMU = threading.local()


def _emu_state():
    st = _EMU.__dict__
    if "work" not in st:
        _EMU.work, _EMU.synced, _EMU.stream = 0, 0, None
    return _EMU


def emu_default_work(n: int = 0) -> int:
    """Count ``n`` more items of work queued on the emulated default stream (none when an emulated
    second stream is current: the work goes there); the count so far."""
    st = _emu_state()
    if st.stream is None:
        st.work += n
    return st.work


def emu_host_sync() -> None:
    """The host waited for the whole device (cudaDeviceSynchronize): every stream is ordered after it."""
    st = _emu_state()
    st.synced = st.work


def emu_current_stream(stream=None, enter: bool | None = None):
    """The emulated second stream whose ``with`` block runs (set/cleared by EmuStream)."""
    st = _emu_state()
    if enter is True:
        prev, st.stream = st.stream, stream
        return prev
    if enter is False:
        st.stream = stream
    return st.stream


# Launches from Python, counted in the launch path (both sides): ``kernel`` one kernel each,
# ``graph`` one CUDA graph each (runtime.cuda.graph; the kernels an emulated graph replays are
# not counted, as a GPU replays them without Python). ``ggufkit bench`` reports them per token.
LAUNCHES = {"kernel": 0, "graph": 0}
_COUNTING = threading.local()


def count_kernels(on: bool) -> bool:
    """Count kernel launches (off while an emulated graph replays its recorded launches); the previous setting."""
    prev = getattr(_COUNTING, "on", True)
    _COUNTING.on = on
    return prev


def _count_launch() -> None:
    if getattr(_COUNTING, "on", True):
        LAUNCHES["kernel"] += 1


def _emu_stream_check(kname: str) -> None:
    st = _emu_state()
    s = st.stream
    if s is None:
        st.work += 1
    elif max(s.seen, st.synced) < st.work:
        raise CudaError(f"kernel {kname} launched on a second stream that is not ordered after "
                        f"{st.work - max(s.seen, st.synced)} item(s) of work on the default stream "
                        f"(uploads, memsets, kernels): wait for an event recorded there first")


class _EmuFunction:
    def __init__(self, module, name, params):
        self.module, self.name, self.params = module, name, params
        self._fs = {}

    def _f(self, fmad, race):
        key = (fmad, race)
        if key not in self._fs:
            f = getattr(self.module.lib(fmad, race), f"emu_launch_{self.name}")
            f.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.c_size_t, ctypes.c_int, ctypes.c_ulonglong,
                          ctypes.c_size_t, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
            f.restype = ctypes.c_int
            self._fs[key] = f
        return self._fs[key]

    def _race_ranges(self, lib, args, ptrs):
        """Tell the race check which global memory to watch: the arrays the kernel may write."""
        spans, names = [], []
        for i, (p, a) in enumerate(zip(self.params, args)):
            if p.pointer and a is not None and not p.const and a.nbytes:
                lo = ptrs[i]
                spans += [lo, lo + a.nbytes, a.itemsize]
                names.append(p.name)
        lib.emu_race_ranges(len(names), (ctypes.c_ulonglong * max(1, len(spans)))(*spans),
                            "\n".join(names).encode())

    def __call__(self, grid, block, args, shared_mem=0, **opts):
        args = tuple(args)
        g, b = _check_launch(self.name, self.params, grid, block, args, shared_mem,
                             lambda a: isinstance(a, np.ndarray))
        _emu_stream_check(self.name)
        _count_launch()
        o = EmuOptions(**{**_emu_opts().__dict__, **opts})
        keep = []
        ptrs = (ctypes.c_void_p * max(1, len(args)))()
        guards = _Guards(self.name, self.params, args) if o.guard else None
        for i, (p, a) in enumerate(zip(self.params, args)):
            if p.pointer:
                addr = 0 if a is None else (guards.address(i, a) if guards else a.ctypes.data)
                c = ctypes.c_void_p(addr)
            else:
                c = (np.ctypeslib.as_ctypes_type(p.scalar_dtype()) * 1)(a.item())
            keep.append(c)
            ptrs[i] = ctypes.addressof(c)
        dims = (ctypes.c_uint * 6)(*g, *b)
        f = self._f(o.fmad, o.race)
        lib = self.module.lib(o.fmad, o.race)
        with self.module.lock:
            if o.race:
                self._race_ranges(lib, args, [c.value if isinstance(c, ctypes.c_void_p) else None for c in keep])
            rc = f(dims, int(shared_mem), _ORDERS[o.order], o.seed, o.stack_kib, o.flags(), ptrs)
        if rc:
            msg = lib.emu_last_error().decode()
            raise CudaError(f"kernel {self.name} (emulated, grid {g}, block {b}): {msg}")
        if guards:
            guards.finish()


class _Guards:
    """Copies of the array arguments between 4 KiB pads of 0xFF bytes (NaN as f32/f16, -1 as ints):
    a kernel that reads past an array reads NaN; one that writes past it is caught afterwards.
    Arguments that alias (the same array twice) share one copy; partial overlaps are not guarded."""

    PAD = 4096

    def __init__(self, kname, params, args):
        self.kname = kname
        self.params = params
        spans = {}
        for i, (p, a) in enumerate(zip(params, args)):
            if p.pointer and a is not None and a.nbytes:
                spans[i] = (a.ctypes.data, a.ctypes.data + a.nbytes, a)
        self.copies = {}      # start address -> (buffer, array)
        self.addr = {}
        for i, (s, e, a) in spans.items():
            clash = any(j != i and s2 < e and s < e2 and (s2, e2) != (s, e) for j, (s2, e2, _) in spans.items())
            if clash:
                self.addr[i] = s
                continue
            if s not in self.copies:
                buf = np.full(a.nbytes + 2 * self.PAD, 0xFF, np.uint8)
                buf[self.PAD:self.PAD + a.nbytes] = np.frombuffer(a.data, np.uint8) if a.flags.c_contiguous \
                    else a.view(np.uint8).reshape(-1)
                self.copies[s] = (buf, a, i)
            self.addr[i] = self.copies[s][0].ctypes.data + self.PAD

    def address(self, i, a):
        return self.addr.get(i, a.ctypes.data)

    def finish(self):
        for buf, a, i in self.copies.values():
            pad = self.PAD
            lo, hi = buf[:pad], buf[pad + a.nbytes:]
            if (lo != 0xFF).any() or (hi != 0xFF).any():
                n_lo, n_hi = int((lo != 0xFF).sum()), int((hi != 0xFF).sum())
                raise CudaError(f"kernel {self.kname} wrote outside argument {i} ({self.params[i].name}): "
                                f"{n_lo} bytes before it, {n_hi} bytes after it")
            if a.flags.writeable:
                a.reshape(-1).view(np.uint8)[:] = buf[pad:pad + a.nbytes]


class _EmuModule:
    def __init__(self, name: str, arch: int = 800):
        self.name, self.arch = name, arch
        self.kernels = parse_kernels(source(name))
        self._libs = {}
        self.lib(True, False)          # the default build (compile errors show at load)
        self.lock = threading.Lock()   # static __shared__ is per module: one launch at a time
        self._functions = {}

    def lib(self, fmad: bool, race: bool):
        """The build with (fmad) FMA contraction and (race) the race check, made on first use."""
        key = (fmad, race)
        if key not in self._libs:
            path = _build_emu(self.name, self.arch, fmad, race)
            lib = ctypes.CDLL(str(path))
            lib.emu_last_error.restype = ctypes.c_char_p
            lib.emu_race_ranges.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_char_p]
            self._libs[key] = lib
        return self._libs[key]

    def get_function(self, kname: str):
        if kname not in self._functions:
            if kname not in self.kernels:
                raise CudaError(f"{_label(self.name)} has no extern \"C\" __global__ kernel {kname}")
            self._functions[kname] = _EmuFunction(self, kname, self.kernels[kname])
        return self._functions[kname]


# ---------------------------------------------------------------- GPU modules

def require_gpu():
    """Import CuPy and check a usable GPU is there; one-line CudaError otherwise. Returns cupy."""
    try:
        import cupy
    except ImportError:
        raise CudaError("the CUDA backend needs CuPy: pip install 'ggufkit[cuda]' (cupy-cuda12x)") from None
    except Exception as e:  # noqa: BLE001 - a broken CuPy install
        raise CudaError(f"CuPy failed to import: {str(e).splitlines()[0]}") from None
    rt = cupy.cuda.runtime
    try:
        drv = rt.driverGetVersion()
    except Exception:  # noqa: BLE001 - libcuda missing
        raise CudaError("no NVIDIA driver found (libcuda is missing); set GGUFKIT_CUDA_EMULATE=1 "
                        "to run the CUDA code on the CPU") from None
    need = rt.runtimeGetVersion()
    if drv == 0:
        raise CudaError("no NVIDIA driver found; set GGUFKIT_CUDA_EMULATE=1 to run the CUDA code on the CPU")
    if drv // 1000 < need // 1000:
        raise CudaError(f"the NVIDIA driver supports CUDA {drv // 1000}.{drv % 1000 // 10}, CuPy needs "
                        f"{need // 1000}.x: update the driver")
    try:
        n = rt.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError
        raise CudaError(f"no usable CUDA GPU: {str(e).splitlines()[0]}") from None
    if n == 0:
        raise CudaError("no CUDA GPU found")
    return cupy


class _GpuFunction:
    """A kernel of a module loaded on device ``device``: launched with that device current (a
    CUfunction belongs to the context it was loaded in, and the current device is per host thread)."""

    def __init__(self, raw, name, params, cupy, device: int):
        self._k, self.name, self.params, self._cupy, self.device = raw, name, params, cupy, device

    def __call__(self, grid, block, args, shared_mem=0, **_emu_only):
        args = tuple(args)
        g, b = _check_launch(self.name, self.params, grid, block, args, shared_mem,
                             lambda a: isinstance(a, self._cupy.ndarray))
        # a null pointer goes as an 8-byte zero
        args = tuple(np.uint64(0) if (p.pointer and a is None) else a for p, a in zip(self.params, args))
        with self._cupy.cuda.Device(self.device):
            self._k(g, b, args, shared_mem=int(shared_mem))
        _count_launch()


class _GpuModule:
    """NAME.cu compiled by NVRTC and loaded on device ``device`` (one module per device)."""

    def __init__(self, name: str, device: int = 0):
        cupy = require_gpu()
        self.name, self.device = name, device
        src = source(name)
        self.kernels = parse_kernels(src)
        check_nvrtc_arch(cupy, device)
        try:
            with cupy.cuda.Device(device):
                self.raw = cupy.RawModule(code=src, options=("-std=c++17",))
                self.raw.compile()
        except Exception as e:  # noqa: BLE001 - CompileException
            raise CudaError(f"NVRTC could not compile {_label(name)}: {e}") from None
        self._cupy = cupy
        self._functions = {}

    def get_function(self, kname: str):
        if kname not in self._functions:
            if kname not in self.kernels:
                raise CudaError(f"{_label(self.name)} has no extern \"C\" __global__ kernel {kname}")
            with self._cupy.cuda.Device(self.device):
                f = self.raw.get_function(kname)
            self._functions[kname] = _GpuFunction(f, kname, self.kernels[kname], self._cupy, self.device)
        return self._functions[kname]


NVRTC13_MIN_CC = (7, 5)      # NVRTC 13 dropped sm_50..sm_72 ("invalid value for --gpu-architecture")


def check_nvrtc_arch(cupy, device: int) -> None:
    """One-line CudaError when CuPy's NVRTC cannot compile for the device (NVRTC 13, i.e.
    cupy-cuda13x, refuses anything older than sm_75: Pascal and Volta need cupy-cuda12x)."""
    try:
        major = cupy.cuda.nvrtc.getVersion()[0]
        props = cupy.cuda.runtime.getDeviceProperties(device)
    except Exception:  # noqa: BLE001 - let the compile itself report
        return
    cc = (int(props["major"]), int(props["minor"]))
    if major >= 13 and cc < NVRTC13_MIN_CC:
        raise CudaError(f"NVRTC {major} (cupy-cuda{major}x) cannot compile for sm_{cc[0]}{cc[1]}: install "
                        f"cupy-cuda12x (pip install 'ggufkit[cuda12]') for compute capability < 7.5")


# ---------------------------------------------------------------- load

_MODULES: dict = {}
_LOCK = threading.Lock()


def load(name: str, emulate: bool | None = None, arch: int = 800, device: int | None = None):
    """The module for runtime/cuda/NAME.cu (or a path ending in .cu), compiled once per process (and cached on disk).

    emulate: None follows ``emulating()``. arch: __CUDA_ARCH__ seen by the emulated build
    (e.g. 610 to run a kernel's Pascal path). device: the GPU to load it on (default: the
    current one); a module and its kernels belong to one device."""
    emulate = emulating() if emulate is None else emulate
    if device is None and not emulate:
        device = require_gpu().cuda.runtime.getDevice()
    key = (name, emulate, arch if emulate else int(device))
    with _LOCK:
        if key not in _MODULES:
            _MODULES[key] = _EmuModule(name, arch) if emulate else _GpuModule(name, int(device))
        return _MODULES[key]
