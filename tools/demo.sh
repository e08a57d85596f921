#!/usr/bin/env bash
# The README's main command: on the embedded default (a tiny random-weight DeciLM with every block
# kind and the bundled Llama-3 tokenizer), convert it to GGUF like llama.cpp and show what is inside.
# Works from a fresh clone after `pip install -e .`; everything goes to $DEMO_DIR (default: a temp dir).
set -euo pipefail
DEMO_DIR="${DEMO_DIR:-$(mktemp -d -t ggufkit-demo.XXXXXX)}"
mkdir -p "$DEMO_DIR"
echo "== 1. tiny DeciLM checkpoint (bf16 safetensors, 2 shards) -> $DEMO_DIR/deci-tiny"
ggufkit fixture "$DEMO_DIR/deci-tiny" --preset deci-tiny
echo "== 2. convert (llama.cpp convert_hf_to_gguf.py-identical) -> $DEMO_DIR/deci-tiny-bf16.gguf"
ggufkit convert "$DEMO_DIR/deci-tiny" -o "$DEMO_DIR/deci-tiny-bf16.gguf" --outtype auto
echo "== 3. info"
ggufkit info "$DEMO_DIR/deci-tiny-bf16.gguf"
