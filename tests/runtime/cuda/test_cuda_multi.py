"""Two GPUs (``--device cuda:0,cuda:1``), emulated: layers split over two CUDABackends as the plan
says (llama.cpp's --tensor-split, or by free memory), with the CPU too; activations cross at
layer boundaries. The same kernels on each card, so perplexity and greedy tokens equal the
single-GPU run exactly."""
from __future__ import annotations

import shutil

import pytest

from runtime.device import DeviceOptions
from runtime.errors import ModelError
from runtime.generate import generate
from runtime.loader import load
from runtime.perplexity import perplexity, read_text_file
from runtime.plan import place_model
from tests.helpers import tiny_models as T
from tests.helpers.tiny_models import CHUNKS, N_CTX, TEXT

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="CUDA emulation needs g++")


@pytest.fixture(scope="module", autouse=True)
def emulate(cuda_emulation):
    pass


def _devices(m):
    return [getattr(b, "device", "cpu") for b in m.backends], getattr(m.out_backend, "device", "cpu")


def test_two_gpus_equal_one(tmp_path):
    """Each placement over two GPUs against one GPU with the same layers on the CPU: equal
    perplexity and tokens (every number is computed by the same kernels)."""
    m = load(str(T.write_tiny(tmp_path / "llama-q4km.gguf", "llama", T.LLAMA_BLOCKS, "Q4_K_M")))
    text = read_text_file(TEXT)
    prompt = [256, 5, 17, 42]
    cases = [(DeviceOptions("cuda:0,cuda:1", "all", tensor_split="3,1"),    # llama.cpp: items at 0, 1/4, 2/4, 3/4
              (["cuda:0"] * 3, "cuda:1")),
             (DeviceOptions("cuda:0,cuda:1", "all", tensor_split="1,3"), (["cuda:0", "cuda:1", "cuda:1"], "cuda:1")),
             (DeviceOptions("cuda:1,cuda:0", "2", gpu_memory="1GiB,1GiB"),        # by room; layer 0 on the CPU
              (["cpu", "cuda:1", "cuda:0"], "cpu"))]
    want = {}
    for ngl in ("all", "2"):
        place_model(m, DeviceOptions("cuda", ngl), N_CTX)
        want[ngl] = perplexity(m, text, N_CTX, CHUNKS).ppl, list(generate(m, prompt, 5, n_ctx=16))
    for dev, (layers, out) in cases:
        p = place_model(m, dev, N_CTX)
        assert _devices(m) == (layers, out), dev
        assert m.decode_graph is None                  # a graph is one device's
        seq = ["cpu"] + layers + [out]
        assert p.crossings() == sum(a != b for a, b in zip(seq, seq[1:]))
        got = perplexity(m, text, N_CTX, CHUNKS).ppl, list(generate(m, prompt, 5, n_ctx=16))
        assert got == want[dev.gpu_layers], (dev, got, want[dev.gpu_layers])


def test_two_gpu_errors(tmp_path):
    m = load(str(T.write_tiny(tmp_path / "llama.gguf", "llama", T.LLAMA_BLOCKS)))
    with pytest.raises(ModelError, match="distinct GPUs"):
        place_model(m, DeviceOptions("cuda:0,cuda:0"), N_CTX)
    with pytest.raises(ModelError, match="distinct GPUs"):
        place_model(m, DeviceOptions("cuda:0,cpu"), N_CTX)
    with pytest.raises(ModelError, match="one proportion >= 0 per GPU"):
        place_model(m, DeviceOptions("cuda:0,cuda:1", tensor_split="1,2,3"), N_CTX)
    with pytest.raises(ModelError, match="several GPUs"):
        place_model(m, DeviceOptions("cuda:0", tensor_split="1,1"), N_CTX)
    with pytest.raises(ModelError, match="3 GPU memory budgets for 2 GPUs"):
        place_model(m, DeviceOptions("cuda:0,cuda:1", gpu_memory="1GiB,1GiB,1GiB"), N_CTX)
