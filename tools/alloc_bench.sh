#!/usr/bin/env bash
# docs/ALLOCATION.md's evidence: budgeted allocation vs llama.cpp's standard mixes on gemma-3-270m.
#   bash tools/alloc_bench.sh WORKDIR [EVAL_CHUNKS]
# Needs: python tools/get_gemma3.py (the Q4_K_M GGUF), /work/shared/data/wikitext-2-test.txt.
set -euo pipefail
W=${1:?workdir}; N=${2:-6}; T=${WIKITEXT:-../shared/data/wikitext-2-test.txt}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$W"; cd "$W"
[ -f base.gguf ] || python "$REPO/tools/make_noisy_base.py" "$(python "$REPO/tools/get_gemma3.py")" base.gguf
# disjoint halves of wikitext-2 test: first half evaluation, second half calibration
L=$(wc -l < "$T"); H=$((L / 2))
[ -f eval.txt ] || head -n $H "$T" > eval.txt
[ -f calib.txt ] || tail -n +$((H + 1)) "$T" > calib.txt
[ -f imatrix.gguf ] || ggufkit imatrix base.gguf -f calib.txt -c 512 --chunks 20 --no-ppl -o imatrix.gguf
for t in Q2_K IQ3_M Q4_K_M; do
  [ -f std-$t.gguf ] || ggufkit quantize --imatrix imatrix.gguf base.gguf std-$t.gguf $t
done
[ -f std-dynamic-gate.gguf ] || ggufkit quantize --imatrix imatrix.gguf --recipe dynamic-gate base.gguf std-dynamic-gate.gguf IQ2_XXS
# one measurement (cached in measure.json) serves every budget
for t in Q2_K IQ3_M Q4_K_M dynamic-gate; do
  size=$(stat -c %s std-$t.gguf)
  [ -f alloc-$t.gguf ] || ggufkit quantize --imatrix imatrix.gguf --calib-file calib.txt base.gguf alloc-$t.gguf \
      --target-size "$size" > alloc-$t.log
done
ggufkit compare base.gguf std-Q2_K.gguf alloc-Q2_K.gguf std-IQ3_M.gguf alloc-IQ3_M.gguf std-Q4_K_M.gguf \
    alloc-Q4_K_M.gguf std-dynamic-gate.gguf alloc-dynamic-gate.gguf -f eval.txt -c 512 --chunks "$N" \
    --plot "$REPO/docs/allocation-gemma3.png" -t 2 | tee compare.md
