"""``convert``: checkpoint directory -> plan -> metadata -> streamed GGUF (one atomic write).

The pieces live below it: checkpoint.py (safetensors), archs.py (the architecture registry, one
file per architecture), base.py (name map, tensor plan, streaming writer), vocab.py (tokenizer)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import gguf

from ggufkit.atomic import atomic_path, check_output
from ggufkit.convert.archs import ARCHS
from ggufkit.convert.base import (
    OUTTYPES, Model, _general_metadata, _write_stream, plan_tensors, resolve_outtype,
)
from ggufkit.convert.checkpoint import Checkpoint, open_checkpoint
from ggufkit.convert.vocab import write_gpt2_vocab
from ggufkit.errors import GGUFKitError


def load_model(ckpt: Checkpoint) -> Model:
    """Pick the architecture file from config.json's ``architectures`` (auto_map is ignored)."""
    archs = ckpt.config.get("architectures") or []
    for a in archs if isinstance(archs, list) else [archs]:
        if isinstance(a, str) and a in ARCHS:
            return ARCHS[a].model_from_config(ckpt.config)
    raise GGUFKitError(f"unknown architecture {archs or '(none)'} in config.json "
                       f"(supported: {', '.join(ARCHS)})")


def refuse_own_input(ckpt: Checkpoint, out_path: Path) -> None:
    """The output must not be one of the files the conversion reads (config, shards, tokenizer)."""
    if not out_path.exists():
        return
    inputs = {t.path for t in ckpt.tensors.values()}
    inputs |= {p for p in ckpt.dir.iterdir() if p.is_file() and p.suffix != ".gguf"}
    for p in sorted(inputs):
        if p.exists() and os.path.samefile(p, out_path):
            raise GGUFKitError(f"output {out_path} is one of the inputs ({p.name}); choose another path")


def convert(model_dir: str | os.PathLike, out_path: str | os.PathLike, outtype: str = "auto",
            progress: bool = False) -> Path:
    """Convert an HF checkpoint directory to a GGUF file at ``out_path``; return the path.

    Byte-identical to llama.cpp's ``convert_hf_to_gguf.py --outtype OUTTYPE`` for Llama and DeciLM
    (docs/CONVERT.md). Raises GGUFKitError for bad input; never leaves a partial output file.
    """
    if outtype not in (*OUTTYPES, "auto"):
        raise GGUFKitError(f"unknown outtype {outtype!r} (choose from {', '.join([*OUTTYPES, 'auto'])})")
    out_path = check_output(out_path)
    model_dir = Path(model_dir)
    ckpt = open_checkpoint(model_dir)
    refuse_own_input(ckpt, out_path)
    model = load_model(ckpt)
    ftype, weight_type = OUTTYPES[resolve_outtype(outtype, ckpt)]
    plan = plan_tensors(model, ckpt, weight_type)

    w = gguf.GGUFWriter(path=None, arch=model.arch)
    for t in plan:
        shape, dtype = t.storage()
        w.add_tensor_info(t.name, shape, dtype, t.nbytes, raw_dtype=t.qtype)
    _general_metadata(w, model_dir, ftype)
    model.write_params(w, model, ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    model_vocab(w, model, model_dir)

    with atomic_path(out_path) as tmp:
        try:
            w.write_header_to_file(path=tmp)
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            _write_stream(w, plan, progress)
        finally:
            w.close()
    return out_path


def model_vocab(w: gguf.GGUFWriter, model: Model, model_dir: Path) -> None:
    """Tokenizer keys: only GPT-2 style BPE (Llama 3, Nemotron) is supported."""
    if (model_dir / "tokenizer.model").is_file() and model.arch == "llama":
        raise GGUFKitError("SentencePiece tokenizers (tokenizer.model) are not supported; "
                           "only tokenizer.json BPE (Llama 3 style)")
    if model.arch == "llama":
        cfg = model_dir / "tokenizer_config.json"
        if cfg.is_file():
            add_prefix_space = json.loads(cfg.read_text(encoding="utf-8")).get("add_prefix_space")
            if add_prefix_space is not None:
                w.add_add_space_prefix(add_prefix_space)
    write_gpt2_vocab(w, model_dir, model.vocab_size)
