"""Fixtures shared by the CUDA tests."""
import pytest


@pytest.fixture(scope="module")
def cuda_emulation():
    """The CUDA backend on the emulator for the whole module (GGUFKIT_CUDA_EMULATE=1), then back."""
    from runtime.cuda.module import set_emulation
    set_emulation(True)
    yield
    set_emulation(None)
