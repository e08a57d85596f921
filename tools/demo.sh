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
echo "== 4. quantize (llama-quantize-identical): Q8_0 and Q4_K_M"
ggufkit quantize "$DEMO_DIR/deci-tiny-bf16.gguf" "$DEMO_DIR/deci-tiny-q8_0.gguf" Q8_0 > /dev/null
ggufkit quantize "$DEMO_DIR/deci-tiny-bf16.gguf" "$DEMO_DIR/deci-tiny-q4_k_m.gguf" Q4_K_M > /dev/null
echo "== 5. perplexity table (llama-perplexity's method; random weights, so the numbers are huge)"
TEXT="$(cd "$(dirname "$0")/.." && pwd)/tests/golden/runtime/fixture-text.txt"
echo "| file | PPL |"
echo "|---|---|"
for q in bf16 q8_0 q4_k_m; do
  ppl=$(ggufkit perplexity "$DEMO_DIR/deci-tiny-$q.gguf" -f "$TEXT" -c 128 --chunks 2 | sed -n 's/^Final estimate: PPL = //p')
  echo "| deci-tiny-$q | $ppl |"
done
echo "== 6. a short greedy generation (Q4_K_M)"
ggufkit run "$DEMO_DIR/deci-tiny-q4_k_m.gguf" -p "The capital of France is" -n 12 --temp 0
