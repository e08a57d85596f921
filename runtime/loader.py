"""Open a GGUF and build its model: memory-mapped weights, per-layer hparams, tokenizer.

    model = load("model.gguf")            # -> runtime.models.<arch>.Model
    model.hp.layers[il].n_head_kv         # per-layer shapes as data
    model.tokenizer.encode("text")

Nothing is copied whole: 2-D weights are ``QTensor`` views of one ``np.memmap`` of the
file (dequantized inside the kernels); 1-D tensors (norms, rope_freqs) are small f32 arrays.
"""
from __future__ import annotations

import os

from quant.gguf import GGUFReader
from runtime import backend as B
from runtime.qtensor import QTensor
from runtime.errors import ModelError
from runtime.models import ARCHS
from runtime.models.base import Weights
from runtime.tokenizer import Tokenizer


def read_weights(g: GGUFReader) -> Weights:
    w = Weights()
    for name, t in g.tensors.items():
        q = QTensor.from_reader_tensor(t)
        if len(t.shape) == 1:
            w.vecs[name] = q.dequantize().reshape(-1)
        else:
            w.mats[name] = q
    return w


def prepare_kernels(qtypes) -> list[str]:
    """Compile only the kernels these weight types need (first run: one notice, see runtime.notices)."""
    from runtime import notices
    return B.prepare(qtypes, notices.notify)


def set_threads(n_threads: int | None) -> None:
    """The kernels' thread count, set once, when a model is loaded (``runtime.backend.set_num_threads``);
    None leaves it as it is (all cores unless set before).

    OpenMP worker threads that spin while idle (libgomp's default) make every parallel kernel wait
    for a descheduled spinner when the cores are shared: measured 1030 ms/token with 2 threads on a
    loaded 2-core machine vs 32-49 ms passive. So the policy is made passive here, before Numba's
    OpenMP pool starts (overridable by setting OMP_WAIT_POLICY)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if n_threads:
        B.set_num_threads(n_threads)


def load(path: str, with_tokenizer: bool = True, n_threads: int | None = None, *,
         reader: GGUFReader | None = None):
    """Load a GGUF of any architecture in ``runtime.models.ARCHS`` (ModelError for anything else,
    GGUFError for a bad file), with ``n_threads`` kernel threads (``set_threads``). ``reader``: the
    file already opened (its header is not read again)."""
    set_threads(n_threads)
    if reader is None and not os.path.isfile(path):
        raise ModelError(f"{path}: no such file")
    g = reader if reader is not None else GGUFReader(path)
    arch = g.get("general.architecture")
    if arch not in ARCHS:
        raise ModelError(f"{path}: unsupported architecture {arch!r} (supported: {', '.join(ARCHS)})")
    mod = ARCHS[arch]
    hp = mod.read_hparams(g.fields, g.tensors)
    tok = Tokenizer.from_gguf(g) if with_tokenizer else None
    weights = read_weights(g)
    prepare_kernels({t.qtype for t in weights.mats.values()})
    model = mod.Model(hp, weights, tok, path)
    model.gguf = g
    return model


def warm_decode(path: str) -> None:
    """Compile (into Numba's disk cache) the decode layer programs of the GGUF at ``path``: the
    child process of ``runtime.step.ready``."""
    model = load(path, with_tokenizer=False, n_threads=1)
    cache = model.new_cache(2)
    if model.decode_step(cache, 1) is not None:
        model.forward([0], cache)
