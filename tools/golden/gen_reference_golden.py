"""Golden logits for tests/reference/test_reference.py, computed by HF transformers (the oracle).

Run with the oracle venv (torch + transformers 4.57.6), from the repo root:

    /work/oracle/venv/bin/python -m tools.golden.gen_reference_golden [--python python3]

1. Makes the llama-tiny and deci-tiny fixtures (seed 0, 2 shards) with the project's own python
   (``--python``), exactly as tests/conftest.py does, and records their sha256.
2. llama-tiny: ``LlamaForCausalLM.from_pretrained`` (float64, sdpa attention) gives the logits.
3. deci-tiny: transformers has no DeciLM, and remote code is never run. NVIDIA's
   modeling_decilm.py is the Llama code with a per-layer block choice, so the DeciLM forward is
   assembled here from transformers' own Llama modules (LlamaAttention with the layer's KV heads,
   LlamaMLP with the layer's intermediate size, LlamaRMSNorm, LlamaRotaryEmbedding), following
   DeciLMDecoderLayer.forward: no-op attention skips the block (no norm), replace_with_linear is
   ``x + linear_attn(input_layernorm(x))``, no-op FFN skips the FFN. The same assembly is first run
   on llama-tiny and must match LlamaForCausalLM, which checks the assembly itself.

Writes tests/golden/reference/{preset}.npz: tokens, top-16 ids/values, 512 fixed logit columns,
per-row logsumexp / sum / sum of squares (a checksum over the whole vocab), the residual stream
after every layer, and the fixtures' sha256. Note transformers' float64 run still does RMSNorm,
RoPE cos/sin in float32, so agreement with the float64 numpy reference is ~1e-6, not 1e-12.

4. llama.cpp as a second oracle (skipped with --no-llama-cpp): each fixture is converted by
   llama.cpp's own convert_hf_to_gguf.py (--outtype f32, on a copy without auto_map) and scored by
   llama-perplexity (-c 32, 4 chunks, flash attention off and an F32 KV cache so nothing is rounded
   to f16). Writes tests/golden/reference/{preset}-llamacpp.npz: the tokens llama.cpp used, n_ctx,
   whether it adds BOS, and the running per-chunk PPL it printed.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "golden" / "reference"
SEED = 0
# "<|begin_of_text|>The quick brown fox jumps over the lazy dog. 1234 ..." plus a few high ids
TOKENS = [128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13, 220, 4513, 19, 128006, 128009]
TOP_K = 16
N_COLS = 512
LLAMA_CPP = Path("/work/oracle/llama_cpp_python-0.3.36/vendor/llama.cpp")
LLAMA_BIN = Path("/work/oracle/build/bin")
PPL_CTX, PPL_CHUNKS = 32, 4
PPL_TEXT = (
    "The history of the transistor begins in the early twentieth century, when physicists first tried to "
    "control the flow of electrons through solid materials. Researchers at Bell Laboratories built the first "
    "working point-contact device in 1947, and within a decade the junction transistor had replaced vacuum "
    "tubes in radios, hearing aids and computers. Smaller, cheaper and far more reliable, these devices made it "
    "possible to pack thousands and then billions of switches onto a single chip of silicon, which changed how "
    "people work, talk and learn all over the world."
) * 2


def make_fixture(python: str, preset: str, out: Path) -> dict[str, str]:
    subprocess.run([python, "-m", "ggufkit", "fixture", str(out), "--preset", preset,
                    "--seed", str(SEED), "--shards", "2"], check=True, cwd=REPO, stderr=subprocess.DEVNULL)
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(out.glob("*.safetensors"))}


def load_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    w = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        w.update({k: v.to(torch.float64) for k, v in load_file(f).items()})
    return w


def ffn_size(ffn_mult: float, hidden: int) -> int:
    n = int(2 * ffn_mult * hidden / 3)
    return n if n % 256 == 0 else n + 256 - n % 256


class DeciFromLlamaModules(torch.nn.Module):
    """DeciLMForCausalLM's forward, built from transformers' Llama modules (see module doc)."""

    def __init__(self, cfg: dict, w: dict[str, torch.Tensor]):
        super().__init__()
        n_head, d = cfg["num_attention_heads"], cfg["hidden_size"]
        base = LlamaConfig(
            vocab_size=cfg["vocab_size"], hidden_size=d, num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=n_head, num_key_value_heads=n_head, intermediate_size=4 * d,
            rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"], rope_scaling=cfg["rope_scaling"],
            max_position_embeddings=cfg["max_position_embeddings"], hidden_act="silu",
            attention_bias=False, mlp_bias=False)
        base._attn_implementation = "sdpa"
        blocks = cfg.get("block_configs") or [
            {"attention": {"no_op": False, "replace_with_linear": False,
                           "n_heads_in_group": n_head // cfg["num_key_value_heads"]},
             "ffn": {"no_op": False, "ffn_mult": None, "intermediate_size": cfg["intermediate_size"]}}
        ] * cfg["num_hidden_layers"]
        self.blocks = blocks
        self.rotary = LlamaRotaryEmbedding(base)
        self.layers = torch.nn.ModuleList()
        for i, b in enumerate(blocks):
            a, f = b["attention"], b["ffn"]
            layer = torch.nn.Module()
            if not a["no_op"]:
                layer.input_layernorm = LlamaRMSNorm(d, eps=base.rms_norm_eps)
                if a["replace_with_linear"]:
                    layer.self_attn = torch.nn.Module()
                    layer.self_attn.linear_attn = torch.nn.Linear(d, d, bias=False)
                else:
                    lc = copy.deepcopy(base)
                    lc.num_key_value_heads = n_head // a["n_heads_in_group"]
                    layer.self_attn = LlamaAttention(lc, i)
            if not f["no_op"]:
                fc = copy.deepcopy(base)
                fc.intermediate_size = f.get("intermediate_size") or ffn_size(f["ffn_mult"], d)
                layer.post_attention_layernorm = LlamaRMSNorm(d, eps=base.rms_norm_eps)
                layer.mlp = LlamaMLP(fc)
            self.layers.append(layer)
        self.embed_tokens = torch.nn.Embedding(cfg["vocab_size"], d)
        self.norm = LlamaRMSNorm(d, eps=base.rms_norm_eps)
        self.lm_head = torch.nn.Linear(d, cfg["vocab_size"], bias=False)
        self.to(torch.float64)
        state = {k.removeprefix("model."): v for k, v in w.items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("inv_freq") for k in missing), (missing, unexpected)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor):
        h = self.embed_tokens(ids)[None]                         # [1, T, d]
        pos = torch.arange(ids.shape[0])[None]
        cos_sin = self.rotary(h, pos)
        hidden = []
        for b, layer in zip(self.blocks, self.layers):
            a, f = b["attention"], b["ffn"]
            if a["no_op"]:
                pass
            elif a["replace_with_linear"]:
                h = h + layer.self_attn.linear_attn(layer.input_layernorm(h))
            else:
                h = h + layer.self_attn(layer.input_layernorm(h), position_embeddings=cos_sin, attention_mask=None)[0]
            if not f["no_op"]:
                h = h + layer.mlp(layer.post_attention_layernorm(h))
            hidden.append(h[0])
        return self.lm_head(self.norm(h))[0], torch.stack(hidden)


def llama_cpp_perplexity(ckpt: Path, work: Path, llama_cpp: Path, bin_dir: Path) -> dict:
    """Convert with llama.cpp's converter (f32) and score PPL_TEXT with llama-perplexity."""
    src = work / (ckpt.name + "-noautomap")
    shutil.copytree(ckpt, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("auto_map", None)
    (src / "config.json").write_text(json.dumps(cfg, indent=2))
    gguf_path = work / (ckpt.name + ".f32.gguf")
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"))
    subprocess.run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(src), "--outtype", "f32",
                    "--outfile", str(gguf_path)], check=True, env=env, capture_output=True)
    text = work / "ppl.txt"
    text.write_text(PPL_TEXT)
    tok = subprocess.run([str(bin_dir / "llama-tokenize"), "-m", str(gguf_path), "-f", str(text), "--ids",
                          "--log-disable"], check=True, capture_output=True, text=True).stdout
    tokens = json.loads(tok.strip().splitlines()[-1])
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    from gguf import GGUFReader
    add_bos = bool(GGUFReader(gguf_path).fields["tokenizer.ggml.add_bos_token"].contents())
    out = subprocess.run([str(bin_dir / "llama-perplexity"), "-m", str(gguf_path), "-f", str(text),
                          "-c", str(PPL_CTX), "--chunks", str(PPL_CHUNKS), "-b", str(PPL_CTX), "-t", "1",
                          "-fa", "off", "-ctk", "f32", "-ctv", "f32"],
                         check=True, capture_output=True, text=True)
    ppl = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+),", out.stdout + out.stderr)]
    assert len(ppl) == PPL_CHUNKS, out.stdout + out.stderr
    return {"tokens": np.array(tokens, dtype=np.int64), "n_ctx": np.array(PPL_CTX), "add_bos": np.array(add_bos),
            "bos_id": np.array(128000), "ppl": np.array(ppl, dtype=np.float64),
            "meta": np.array(json.dumps({"llama_cpp": str(llama_cpp), "flash_attn": "off", "kv": "f32",
                                         "outtype": "f32"}))}


def summarize(logits: np.ndarray, hidden: np.ndarray, sha: dict, meta: dict) -> dict:
    cols = np.sort(np.random.default_rng(1234).choice(logits.shape[1], N_COLS, replace=False))
    top = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]
    mx = logits.max(axis=1, keepdims=True)
    return {
        "tokens": np.array(TOKENS, dtype=np.int64),
        "top_ids": top.astype(np.int64),
        "top_vals": np.take_along_axis(logits, top, 1).astype(np.float32),
        "cols": cols.astype(np.int64),
        "col_vals": logits[:, cols].astype(np.float32),
        "lse": (mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))).astype(np.float64),
        "row_sum": logits.sum(axis=1),
        "row_sumsq": (logits * logits).sum(axis=1),
        "hidden": hidden.astype(np.float32),
        "fixture_sha256": np.array([f"{k}={v}" for k, v in sha.items()]),
        "meta": np.array(json.dumps(meta)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="python3", help="python with ggufkit installed (makes the fixtures)")
    ap.add_argument("--llama-cpp", type=Path, default=LLAMA_CPP, help="llama.cpp source tree (converter)")
    ap.add_argument("--llama-bin", type=Path, default=LLAMA_BIN, help="llama.cpp binaries (llama-perplexity)")
    ap.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp perplexity golden")
    args = ap.parse_args()
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "dtype": "float64",
            "attn": "sdpa", "seed": SEED}
    ids = torch.tensor(TOKENS)
    with tempfile.TemporaryDirectory() as tmp:
        # llama-tiny: the real LlamaForCausalLM, and the assembly checked against it
        d = Path(tmp) / "llama-tiny"
        sha = make_fixture(args.python, "llama-tiny", d)
        model = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.float64, attn_implementation="sdpa").eval()
        with torch.no_grad():
            hf = model(ids[None]).logits[0].numpy()
        cfg = json.loads((d / "config.json").read_text())
        asm, hidden = DeciFromLlamaModules(cfg, load_weights(d))(ids)
        diff = float(np.abs(asm.numpy() - hf).max())
        print(f"llama-tiny: LlamaForCausalLM vs assembled Llama modules: max |diff| = {diff:.3g}")
        assert diff < 1e-9, "the module assembly does not reproduce LlamaForCausalLM"
        np.savez_compressed(OUT / "llama-tiny.npz",
                            **summarize(hf, hidden.numpy(), sha, {**meta, "model": "LlamaForCausalLM"}))

        # deci-tiny: the assembly (DeciLMDecoderLayer semantics)
        d = Path(tmp) / "deci-tiny"
        sha = make_fixture(args.python, "deci-tiny", d)
        cfg = json.loads((d / "config.json").read_text())
        logits, hidden = DeciFromLlamaModules(cfg, load_weights(d))(ids)
        np.savez_compressed(OUT / "deci-tiny.npz",
                            **summarize(logits.numpy(), hidden.numpy(), sha,
                                        {**meta, "model": "DeciLM assembled from transformers Llama modules"}))

        if not args.no_llama_cpp:
            for preset in ("llama-tiny", "deci-tiny"):
                res = llama_cpp_perplexity(Path(tmp) / preset, Path(tmp), args.llama_cpp, args.llama_bin)
                print(f"{preset}: llama.cpp running PPL per chunk {res['ppl'].tolist()}")
                np.savez_compressed(OUT / f"{preset}-llamacpp.npz", **res)
    for f in sorted(OUT.glob("*.npz")):
        print(f"wrote {f.relative_to(REPO)} ({f.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
