"""The tiny GGUFs the tests and tools build, all through gguf-py's writer:

  write_tiny       ggufkit.synthetic.write_model for the emulated CUDA tests: every weight row a multiple
                   of 256 (so K-quants and IQ types really are used), the 259-token byte-level tokenizer
                   (so perplexity runs on text and the output head is small enough for the emulator)
  write_gguf       f32 random weights with free per-layer head counts (the loader and architecture
                   tests), hyperparameters by ggufkit.synthetic.add_hparams
  write_llama1     a one-layer llama with a byte-level BPE tokenizer: write_chat_gguf (the bundled
                   Llama-3 tokenizer and chat template) and the fuzzer's seed (tools/conformance/fuzz_inputs.py)
  write_kv_gguf    any key/values and tensors (vocab-only files, model skeletons for llama-quantize)

quantize_cases.write_tiny_gguf writes its bytes by hand: llama-quantize's sha256 goldens depend on
them (tests/golden/quantize)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

from ggufkit.synthetic import add_hparams, iq_mix, write_model  # noqa: F401
from tests.helpers import GOLDENS, REPO
from tests.helpers.vocab_cases import llama3_metadata

# deci: (n_head, n_head_kv, n_ff) per layer: GQA 4/2, no-op attention + FFN, linear attention,
# GQA 4/1, a whole no-op layer, MHA 4/4
DECI_BLOCKS = [(4, 2, 512), (0, 0, 256), (4, 0, 256), (4, 1, 512), (0, 0, 0), (4, 4, 256)]
LLAMA_BLOCKS = [(4, 2, 512)] * 3
GEMMA3_BLOCKS = [(4, 1, 512)] * 3

# the emulated-CUDA perplexity cases (tests/runtime/cuda/test_cuda_model.py, tools/conformance/compare_cuda_emu.py):
# (model, placement) with placement "all" layers on the GPU or "part" of them
CASES = [("deci-f16", "all"), ("deci-f16", "part"), ("deci-q4km", "all"), ("deci-q4km", "part"),
         ("deci-iq", "all"), ("deci-iq", "part"), ("llama-f16", "all"), ("gemma3-f16", "all"),
         ("gemma3-f16", "part")]
TEXT = str(GOLDENS / "runtime" / "fixture-text.txt")
N_CTX, CHUNKS = 32, 2


def write_tiny(path, arch: str, blocks, types="F16", seed: int = 0):
    return write_model(path, arch, blocks, n_embd=256, head_dim=64, types=types, seed=seed)


# ---------------------------------------------------------------- through gguf-py's writer

def write_kv_gguf(path, fields: dict, tensors=()) -> Path:
    """A GGUF with these key/values (bool, str, int as uint32, float as float32, anything else an
    array) and (name, array) tensors; without tensors a header-only file (a vocab for
    llama-tokenize, a model skeleton for llama-quantize --dry-run)."""
    w = GGUFWriter(str(path), arch=fields["general.architecture"])
    for k, v in fields.items():
        if k == "general.architecture":
            continue
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_array(k, list(v))
    for name, a in tensors:
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file() if tensors else w.write_ti_data_to_file()
    w.close()
    return Path(path)


N_EMBD, N_HEAD, HD, N_VOCAB = 64, 4, 16, 96


def _rng_tensor(rng, *shape, std=0.05):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def write_gguf(path, arch: str, layers: list[tuple[int, int, int]], tied=False, extra=None, seed=0):
    """A random-weight GGUF. layers: (n_head, n_head_kv, n_ff) per layer."""
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), arch)
    add_hparams(w, arch, layers, N_EMBD, HD, n_ctx_train=256)
    for k, v in (extra or {}).items():
        (w.add_uint32 if isinstance(v, int) else w.add_float32)(k, v)
    w.add_tensor("token_embd.weight", _rng_tensor(rng, N_VOCAB, N_EMBD, std=1.0))
    w.add_tensor("output_norm.weight", 1 + _rng_tensor(rng, N_EMBD))
    if not tied:
        w.add_tensor("output.weight", _rng_tensor(rng, N_VOCAB, N_EMBD, std=0.2))
    for il, (nh, nkv, nff) in enumerate(layers):
        p = f"blk.{il}."
        if nh:
            w.add_tensor(p + "attn_norm.weight", 1 + _rng_tensor(rng, N_EMBD))
            if nkv:
                w.add_tensor(p + "attn_q.weight", _rng_tensor(rng, nh * HD, N_EMBD, std=0.3))
                w.add_tensor(p + "attn_k.weight", _rng_tensor(rng, nkv * HD, N_EMBD, std=0.3))
                w.add_tensor(p + "attn_v.weight", _rng_tensor(rng, nkv * HD, N_EMBD, std=0.2))
                w.add_tensor(p + "attn_output.weight", _rng_tensor(rng, N_EMBD, nh * HD, std=0.1))
            else:
                w.add_tensor(p + "attn_output.weight", _rng_tensor(rng, N_EMBD, N_EMBD, std=0.1))
        if nff:
            w.add_tensor(p + "ffn_norm.weight", 1 + _rng_tensor(rng, N_EMBD))
            w.add_tensor(p + "ffn_gate.weight", _rng_tensor(rng, nff, N_EMBD, std=0.2))
            w.add_tensor(p + "ffn_up.weight", _rng_tensor(rng, nff, N_EMBD, std=0.2))
            w.add_tensor(p + "ffn_down.weight", _rng_tensor(rng, N_EMBD, nff, std=0.1))
        if arch == "gemma3":
            for t in ("attn_q_norm", "attn_k_norm"):
                w.add_tensor(p + t + ".weight", 1 + _rng_tensor(rng, HD))
            for t in ("post_attention_norm", "post_ffw_norm"):
                w.add_tensor(p + t + ".weight", 1 + _rng_tensor(rng, N_EMBD))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


IDS = [5, 17, 42, 3, 88, 61, 7, 29, 50, 11]
DECI_LAYERS = [(4, 2, 128), (0, 0, 64), (4, 0, 96), (4, 1, 128), (0, 0, 0), (4, 4, 64)]


# the bundled Llama-3 tokenizer's (Nemotron v1.5-style) chat template
CHAT_TEMPLATE = json.loads((REPO / "ggufkit" / "data" / "llama3-tokenizer" / "tokenizer_config.json").read_text())["chat_template"]


def write_llama1(path, tokens, token_types, merges, bos: int, eos: int, pre: str, n_embd: int, n_ff: int,
                 n_head: int, n_head_kv: int, n_ctx: int, std: float, wtype=np.float32, seed: int = 0,
                 name: str | None = None, hparams=(), add_bos: bool | None = None,
                 chat_template: str | None = None) -> Path:
    """A one-layer llama with a byte-level BPE tokenizer: N(0, std) float32 embeddings, the layer's
    matrices in ``wtype``, norms 1. ``hparams``: (GGUFWriter method, value) pairs written after the
    standard ones (eps 1e-5, rope dimension = head size)."""
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), "llama")
    if name is not None:
        w.add_name(name)
    hd = n_embd // n_head
    for k, v in (("add_block_count", 1), ("add_embedding_length", n_embd), ("add_context_length", n_ctx),
                 ("add_head_count", n_head), ("add_head_count_kv", n_head_kv), ("add_feed_forward_length", n_ff),
                 ("add_layer_norm_rms_eps", 1e-5), ("add_rope_dimension_count", hd), *hparams):
        getattr(w, k)(v)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    f = lambda *s: (rng.standard_normal(s) * std).astype(np.float32)  # noqa: E731
    w.add_tensor("token_embd.weight", f(len(tokens), n_embd))
    for t in ("output_norm", "blk.0.attn_norm", "blk.0.ffn_norm"):
        w.add_tensor(f"{t}.weight", np.ones(n_embd, np.float32))
    for t, s in (("attn_q", (n_head * hd, n_embd)), ("attn_k", (n_head_kv * hd, n_embd)),
                 ("attn_v", (n_head_kv * hd, n_embd)), ("attn_output", (n_embd, n_head * hd)),
                 ("ffn_gate", (n_ff, n_embd)), ("ffn_up", (n_ff, n_embd)), ("ffn_down", (n_embd, n_ff))):
        w.add_tensor(f"blk.0.{t}.weight", f(*s).astype(wtype, copy=False))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def write_chat_gguf(path, pre: str = "smaug-bpe", add_bos: bool | None = False) -> Path:
    """A tiny random llama GGUF carrying the bundled Llama-3 tokenizer and chat template."""
    md = llama3_metadata()
    return write_llama1(path, md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"],
                        md["tokenizer.ggml.merges"], 128000, 128009, pre, n_embd=32, n_ff=64, n_head=2, n_head_kv=1,
                        n_ctx=512, std=0.3, seed=1, add_bos=add_bos, chat_template=CHAT_TEMPLATE)
