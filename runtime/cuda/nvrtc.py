"""Compile every runtime/cuda/*.cu with NVRTC for an explicit arch, without a GPU, and read
ptxas's resource usage (registers, spills, shared memory, stack) per kernel.

CuPy's own compile helper asks the device for its arch, so this calls NVRTC directly
(``cupy.cuda.nvrtc``, with libnvrtc from the ``nvidia-cuda-nvrtc-cu12`` wheel), to a cubin,
with ``-Xptxas -v``. ``python -m tools.conformance.cuda_compile_table`` prints the table kept in docs/CUDA.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.cuda import module as M

ARCHS = (61, 75, 80, 86, 89, 90)   # Pascal (dp4a) .. Hopper
# most shared memory one block may use (with the cudaFuncSetAttribute opt-in above 48 KiB)
SMEM_LIMIT = {61: 48 * 1024, 75: 64 * 1024, 80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
# what cupy.RawModule(options=("-std=c++17",)) hands NVRTC besides the arch (CuPy 13/14 add
# -ftz=true and --device-as-default-execution-space), so the check compiles what a GPU run will.
# -ftz=true: f32 denormals flush to zero on the GPU (the emulator keeps them). f16 subnormals are
# far above the f32 denormal range; the one f32 denormal a kernel could meet, MXFP4's E8M0 scales
# 2^-128 and 2^-127, is flushed explicitly in quants.cu (qk_e8m0_half) so both sides agree.
OPTIONS = ("-std=c++17", "-ftz=true", "--device-as-default-execution-space")


@dataclass
class Usage:
    kernel: str
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    smem: int = 0          # static shared memory, bytes


def nvrtc():
    """cupy.cuda.nvrtc, or a CudaError saying what is missing."""
    try:
        from cupy.cuda import nvrtc as nv
        nv.getVersion()
    except Exception as e:  # noqa: BLE001 - ImportError, or libnvrtc not found
        raise M.CudaError(f"NVRTC is not available ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                          f"pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12") from None
    return nv


NVRTC13_MIN_ARCH = 75     # NVRTC 13 dropped sm_50..sm_72


def supported_archs(archs=ARCHS) -> tuple[int, ...]:
    """The archs of ``archs`` this NVRTC compiles for (NVRTC 13: sm_75 and newer; all when
    NVRTC cannot be loaded, so callers report that instead)."""
    try:
        major = nvrtc().getVersion()[0]
    except M.CudaError:
        return tuple(archs)
    return tuple(a for a in archs if major < 13 or a >= NVRTC13_MIN_ARCH)


def compile_cubin(name: str, arch: int) -> tuple[bytes, str]:
    """(cubin, log) for runtime/cuda/NAME.cu on sm_ARCH; CudaError with NVRTC's log on failure."""
    nv = nvrtc()
    if nv.getVersion()[0] >= 13 and arch < NVRTC13_MIN_ARCH:
        raise M.CudaError(f"NVRTC {nv.getVersion()[0]} cannot compile for sm_{arch} (sm_{NVRTC13_MIN_ARCH} and newer): "
                          f"use nvidia-cuda-nvrtc-cu12 (pip install 'ggufkit[cuda12]')")
    prog = nv.createProgram(M.source(name), f"{name}.cu", [], [])
    try:
        try:
            nv.compileProgram(prog, [f"--gpu-architecture=sm_{arch}", *OPTIONS, "-Xptxas", "-v"])
        except Exception as e:  # noqa: BLE001 - NVRTCError
            log = nv.getProgramLog(prog)
            raise M.CudaError(f"NVRTC sm_{arch} could not compile {name}.cu: {e}\n{log}") from None
        return nv.getCUBIN(prog), nv.getProgramLog(prog)
    finally:
        nv.destroyProgram(prog)


_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_PROPS = re.compile(r"Function properties for (\w+)")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log: str) -> dict[str, Usage]:
    """ptxas -v output -> Usage per entry function (kernel)."""
    out: dict[str, Usage] = {}
    entry = props = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            entry = m.group(1)
            out[entry] = Usage(entry)
            props = None
        elif m := _PROPS.search(line):
            props = m.group(1)
        elif (m := _STACK.search(line)) and props in out:
            u = out[props]
            u.stack, u.spill_stores, u.spill_loads = (int(v) for v in m.groups())
        elif (m := _USED.search(line)) and entry in out:
            out[entry].registers = int(m.group(1))
            s = _SMEM.search(line)
            out[entry].smem = int(s.group(1)) if s else 0
    return out


def resource_usage(name: str, arch: int) -> dict[str, Usage]:
    return parse_ptxas(compile_cubin(name, arch)[1])


def table(archs=ARCHS, names=None) -> str:
    """Markdown table: kernel x arch -> registers / spills / static smem / stack (the archs this
    NVRTC compiles for)."""
    archs = supported_archs(archs)
    names = names or M.list_sources()
    rows = ["| source | kernel | " + " | ".join(f"sm_{a}" for a in archs) + " |",
            "|---|---|" + "---|" * len(archs)]
    for name in names:
        per_arch = {a: resource_usage(name, a) for a in archs}
        for k in per_arch[archs[0]]:
            cells = []
            for a in archs:
                u = per_arch[a][k]
                cell = f"{u.registers} r"
                if u.smem:
                    cell += f", {u.smem} B smem"
                if u.stack:
                    cell += f", {u.stack} B stack"
                if u.spill_stores or u.spill_loads:
                    cell += f", **{u.spill_stores}/{u.spill_loads} B spill**"
                cells.append(cell)
            rows.append(f"| {name}.cu | {k} | " + " | ".join(cells) + " |")
    return "\n".join(rows)

