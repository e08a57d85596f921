"""Shared pytest fixtures: tiny HF checkpoints (made once per session) and the optional ../shared dir."""
from __future__ import annotations

from pathlib import Path

import pytest

from ggufkit.fixtures import make_checkpoint
from tests.helpers import REPO

FIXTURE_SEED = 0  # golden files under tests/golden/ were made from checkpoints with this seed


@pytest.fixture(scope="session")
def deci_ckpt(tmp_path_factory) -> Path:
    """deci-tiny checkpoint dir (bf16, 2 shards, seed 0): every DeciLM block kind, vocab 128256."""
    return make_checkpoint(tmp_path_factory.mktemp("deci-tiny"), "deci-tiny", seed=FIXTURE_SEED, n_shards=2)


@pytest.fixture(scope="session")
def llama_ckpt(tmp_path_factory) -> Path:
    """llama-tiny checkpoint dir (bf16, 2 shards, seed 0): LlamaForCausalLM, 4 layers, GQA 4/2."""
    return make_checkpoint(tmp_path_factory.mktemp("llama-tiny"), "llama-tiny", seed=FIXTURE_SEED, n_shards=2)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repo (big local data); tests using it skip when it is absent (CI)."""
    d = REPO.parent / "shared"
    if not d.is_dir():
        pytest.skip("../shared not present")
    return d


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """The real gemma-3-270m Q4_K_M GGUF ($GGUFKIT_GEMMA3 or ~/.cache/ggufkit, see tools/get_gemma3.py).

    Skips if absent, except in CI (CI=true, set by .ci/run, which fetches it): there it fails."""
    import os
    p = Path(os.environ.get("GGUFKIT_GEMMA3", Path.home() / ".cache" / "ggufkit" / "gemma-3-270m-q4_k_m.gguf"))
    if not p.is_file():
        msg = f"gemma-3-270m-q4_k_m.gguf not installed at {p} (python tools/get_gemma3.py)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def deci_ref(deci_ckpt):
    """deci-tiny loaded by the numpy reference (tests.reference.forward.Model); use forward(m, ids)."""
    from tests.reference.forward import load_hf

    return load_hf(deci_ckpt)


@pytest.fixture(scope="session")
def llama_ref(llama_ckpt):
    """llama-tiny loaded by the numpy reference (tests.reference.forward.Model)."""
    from tests.reference.forward import load_hf

    return load_hf(llama_ckpt)


@pytest.fixture(scope="module")
def cuda_emulation():
    """The CUDA backend on the emulator for the whole module (GGUFKIT_CUDA_EMULATE=1), then back."""
    from runtime.cuda.module import set_emulation
    set_emulation(True)
    yield
    set_emulation(None)
