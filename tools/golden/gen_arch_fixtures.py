"""Tiny random-weight HF checkpoints for qwen2 (yarn), qwen3, phi3 (longrope), gemma2 (softcaps,
SWA) and llama (llama3 rope), converted by llama.cpp's own convert_hf_to_gguf.py, quantized by
llama-quantize (Q8_0) and scored by llama-perplexity: the oracle for tests/runtime/test_runtime_archs.py.

    /path/to/venv-with-torch/bin/python -m tools.golden.gen_arch_fixtures LLAMA_CPP_DIR WIKI_TXT

Needs torch, transformers==4.57.6, sentencepiece (a separate venv; see docs/COMPATIBILITY.md).
Writes tests/data/models/<arch>-tiny-f16.gguf and tests/golden/arch/<arch>-tiny.json
(PPL at c=128 over 4 chunks of wikitext, and llama-simple's greedy 24-token continuations).
A 1000-token SentencePiece BPE vocab (byte fallback) is trained on the text so the files stay small.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VOCAB = 1000
PROMPTS = ["The history of the city", "In 1998, the band released"]
COMMON = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, initializer_range=0.08,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, torch_dtype="float32")

ARCHS = {
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config",
              dict(rope_theta=10000.0, rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen3": ("Qwen3ForCausalLM", "Qwen3Config", dict(head_dim=48, rope_theta=1000000.0)),
    "phi3": ("Phi3ForCausalLM", "Phi3Config",
             dict(rope_theta=10000.0, original_max_position_embeddings=64, max_position_embeddings=256, pad_token_id=0,
                  rope_scaling={"type": "longrope", "long_factor": [1.0 + 0.25 * i for i in range(16)],
                                "short_factor": [1.0 + 0.05 * i for i in range(16)]})),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config",
               dict(head_dim=32, sliding_window=48, attn_logit_softcapping=20.0, final_logit_softcapping=15.0,
                    query_pre_attn_scalar=32, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                    num_hidden_layers=3, pad_token_id=0)),
    # Ministral3ForCausalLM (llama.cpp arch mistral3): transformers 4.57.6 has no class for it, so a
    # LlamaForCausalLM is saved and its config.json rewritten (same tensor names): yarn rope with
    # mscale_all_dim and llama4-style attention temperature (llama_4_scaling_beta)
    "mistral3": ("LlamaForCausalLM", "LlamaConfig", dict(rope_theta=1000000.0)),
    "llama": ("LlamaForCausalLM", "LlamaConfig",
              dict(rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
}


def train_spm(text: Path, out_dir: Path) -> None:
    import sentencepiece as spm
    sample = out_dir / "sample.txt"
    sample.write_text(text.read_text(encoding="utf-8")[:300_000], encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(sample), model_prefix=str(out_dir / "tokenizer"), vocab_size=VOCAB,
                                   model_type="bpe", byte_fallback=True, character_coverage=0.9995,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
                                   minloglevel=2, split_digits=True)


def make_checkpoint(arch: str, spm_dir: Path, out: Path) -> Path:
    import torch
    import transformers
    cls_name, cfg_name, extra = ARCHS[arch]
    torch.manual_seed(0)
    cfg = getattr(transformers, cfg_name)(**{**COMMON, **extra})
    model = getattr(transformers, cls_name)(cfg)
    with torch.no_grad():      # norms away from 1 so they matter; gemma stores w-1
        for n, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.2 + (0.0 if arch == "gemma2" else 1.0))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.model",):
        (out / f).write_bytes((spm_dir / f).read_bytes())
    if arch == "mistral3":
        cfg = json.loads((out / "config.json").read_text())
        cfg.update(architectures=["Ministral3ForCausalLM"], model_type="ministral3", rope_parameters={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32.0,
            "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 0.5, "llama_4_scaling_beta": 0.1,
            "rope_theta": 1000000.0})
        cfg.pop("rope_scaling", None)
        (out / "config.json").write_text(json.dumps(cfg, indent=1))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                                                           "add_eos_token": False}))
    return out


def run(cmd: list[str], **kw) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", **kw)
    if r.returncode:
        raise RuntimeError(f"{cmd[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def ppl(bin_dir: Path, gguf: Path, text: Path, chunks: int = 4) -> float:
    """llama-perplexity's value after the last chunk. Its lines go through llama.cpp's async
    logger, which sometimes loses the tail at exit: run again until the last chunk is printed."""
    for _ in range(10):
        out = run([str(bin_dir / "llama-perplexity"), "-m", str(gguf), "-f", str(text), "-c", "128", "--chunks",
                   str(chunks), "-t", "2", "-b", "128"])
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", out) or re.search(rf"\[{chunks}\]([0-9.]+),", out)
        if m:
            return float(m.group(1))
    raise RuntimeError(f"llama-perplexity never printed chunk {chunks} for {gguf}")


def main() -> None:
    root, wiki = Path(sys.argv[1]), Path(sys.argv[2])
    only = sys.argv[3:] or list(ARCHS)
    bin_dir = root / "build" / "bin"
    env = {**os.environ, "PYTHONPATH": str(root / "gguf-py")}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        train_spm(wiki, td)
        text = REPO / "tests" / "golden" / "arch" / "text.txt"      # the first 16000 bytes of WIKI_TXT
        for arch in only:
            # (the directory name becomes general.name; llama.cpp keys phi-3 token attributes on
            # names containing "phi3", which would want phi-3's own special tokens)
            ck = make_checkpoint(arch, td, td / f"tiny-{arch[:2]}-{len(arch)}")
            f16 = REPO / "tests" / "data" / "models" / f"{arch}-tiny-f16.gguf"
            q8 = td / f"{arch}-tiny-q8_0.gguf"        # not committed: ggufkit quantize writes the same bytes
            run([sys.executable, str(root / "convert_hf_to_gguf.py"), str(ck), "--outfile", str(f16), "--outtype", "f16"],
                env=env)
            run([str(bin_dir / "llama-quantize"), str(f16), str(q8), "Q8_0"])
            golden = {"arch": arch, "text": "tests/golden/arch/text.txt", "ctx": 128, "chunks": 4,
                      "ppl_f16": ppl(bin_dir, f16, text), "ppl_q8_0": ppl(bin_dir, q8, text)}
            golden["greedy"] = [{"prompt": p, "n_predict": 24, "llama_simple": run(
                [str(bin_dir / "llama-simple"), "-m", str(f16), "-n", "24", p]).split("\n")[0] + "\n"} for p in PROMPTS]
            print(arch, golden, flush=True)
            (REPO / "tests" / "golden" / "arch" / f"{arch}-tiny.json").write_text(json.dumps(golden, indent=1))


if __name__ == "__main__":
    main()
