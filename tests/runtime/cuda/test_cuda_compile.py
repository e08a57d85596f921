"""Every runtime/cuda/*.cu compiles with NVRTC (no GPU needed) for each arch we support, with no
register spills and shared memory within the arch's limit. The table of ptxas numbers is kept
in docs/CUDA.md (python -m tools.conformance.cuda_compile_table)."""
import pytest

from runtime.cuda import module as M
from runtime.cuda import nvrtc as N

try:
    N.nvrtc()
    _SKIP = None
except M.CudaError as e:
    _SKIP = str(e)

pytestmark = pytest.mark.skipif(_SKIP is not None, reason=f"needs NVRTC: {_SKIP}")


def test_parse_ptxas():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k' for 'sm_61'
ptxas info    : Function properties for k
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 328 bytes cmem[0]
"""
    u = N.parse_ptxas(log)["k"]
    assert (u.registers, u.stack, u.spill_stores, u.spill_loads, u.smem) == (40, 16, 8, 4, 2048)


@pytest.mark.parametrize("arch", N.supported_archs())      # NVRTC 13 refuses sm_61
@pytest.mark.parametrize("name", M.list_sources())
def test_compiles_without_spills(name, arch):
    usage = N.resource_usage(name, arch)
    assert set(usage) == set(M.parse_kernels(M.source(name))), "every extern C kernel is an entry"
    for k, u in usage.items():
        assert u.spill_stores == 0 and u.spill_loads == 0, f"{name}.cu {k} spills on sm_{arch}: {u}"
        dynamic = _dynamic_shared().get(k, 0)
        assert u.smem + dynamic <= M.MAX_SHARED_PER_BLOCK <= N.SMEM_LIMIT[arch], \
            f"{name}.cu {k}: {u.smem} B static + {dynamic} B dynamic shared memory"
        assert 0 < u.registers <= 255


def _dynamic_shared() -> dict:
    """Kernel -> most dynamic shared memory its launcher asks for (each launcher module may
    declare DYNAMIC_SHARED_MAX)."""
    import importlib
    out = {}
    for mod in ("runtime.cuda.ops", "runtime.cuda.qmatmul"):
        try:
            out.update(getattr(importlib.import_module(mod), "DYNAMIC_SHARED_MAX", {}))
        except ImportError:
            pass
    return out
