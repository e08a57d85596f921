#!/usr/bin/env bash
# docs/ALLOCATION.md's evidence: budgeted allocation vs llama.cpp's standard mixes on gemma-3-270m.
#   bash tools/experiments/alloc_bench.sh WORKDIR [EVAL_CHUNKS]          (docs/ALLOCATION.md: 10 chunks)
#   LLAMA_QUANTIZE=.../llama-quantize bash tools/experiments/alloc_bench.sh ...   adds the byte-for-byte checks
# Needs: python tools/get_gemma3.py (the Q4_K_M GGUF), /work/shared/data/wikitext-2-test.txt.
# Every step is skipped when its output exists (delete the workdir to start over); each timed step
# leaves STEP.time (wall, CPU, max RSS) and STEP.load (uptime before and after).
set -uo pipefail
W=${1:?workdir}; N=${2:-10}; T=${WIKITEXT:-/work/shared/data/wikitext-2-test.txt}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$W"; cd "$W"
tm() { uptime > "$1.load"; /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB max RSS" -o "$1.time" "${@:2}"
       local rc=$?; uptime >> "$1.load"; return $rc; }
[ -f base.gguf ] || tm base python "$REPO/tools/experiments/make_noisy_base.py" "$(python "$REPO/tools/get_gemma3.py")" base.gguf \
    || exit 1
# disjoint halves of wikitext-2 test: first half evaluation, second half calibration
L=$(wc -l < "$T"); H=$((L / 2))
[ -f eval.txt ] || head -n $H "$T" > eval.txt
[ -f calib.txt ] || tail -n +$((H + 1)) "$T" > calib.txt
[ -f imatrix.gguf ] || tm imatrix ggufkit imatrix base.gguf -f calib.txt -c 512 --chunks 20 --no-ppl -o imatrix.gguf -t 2 \
    > imatrix.log || exit 1

# llama.cpp's standard mixes with the same imatrix, and ggufkit's dynamic-gate recipe
for t in Q2_K IQ3_M Q4_K_M; do
  [ -f std-$t.gguf ] || tm std-$t ggufkit quantize --imatrix imatrix.gguf base.gguf std-$t.gguf $t 2 > std-$t.log 2>&1
done
[ -f std-dynamic-gate.gguf ] || tm std-dynamic-gate ggufkit quantize --imatrix imatrix.gguf --recipe dynamic-gate \
    base.gguf std-dynamic-gate.gguf IQ2_XXS 2 > std-dynamic-gate.log 2>&1
# the same mixes with the 168M-parameter tied embedding at 4.5 bpw (the smallest type a 640-wide row
# can take; IQ3_M's own fallback type IQ4_NL for it): the nearest standard files to ~2.7/3.5/4.9 bpw
for te in Q2_K:q4_0 IQ3_M:iq4_nl Q4_K_M:q4_0; do
  t=${te%%:*}; e=${te##*:}
  [ -f std-$t-emb.gguf ] || tm std-$t-emb ggufkit quantize --imatrix imatrix.gguf --token-embedding-type $e \
      base.gguf std-$t-emb.gguf $t 2 > std-$t-emb.log 2>&1
done

# the measurement (errors + sensitivities; its units cached in the measurement cache, they serve every budget)
[ -f measure.time ] || tm measure python -c "
from ggufkit.measure import measure
m = measure('base.gguf', 'imatrix.gguf', 'calib.txt')
print(m.seconds, m.n_params, m.units)" > measure.log 2>&1 || exit 1
# one allocation per standard file, at that file's exact size, and at 2.7 / 3.5 / 4.9 bpw
for t in Q2_K IQ3_M Q4_K_M dynamic-gate Q2_K-emb IQ3_M-emb Q4_K_M-emb; do
  [ -f alloc-$t.gguf ] || tm alloc-$t ggufkit quantize --imatrix imatrix.gguf --calib-file calib.txt base.gguf \
      alloc-$t.gguf --target-size "$(stat -c %s std-$t.gguf)" > alloc-$t.log 2> alloc-$t.err
done
for b in 2.7 3.5 4.9; do     # 2.7 and 3.5 are below gemma-3-270m's smallest stock mix: these refuse
  [ -f alloc-bpw$b.gguf ] || tm alloc-bpw$b ggufkit quantize --imatrix imatrix.gguf --calib-file calib.txt base.gguf \
      alloc-bpw$b.gguf --target-bpw $b > alloc-bpw$b.log 2> alloc-bpw$b.err || tail -n 1 alloc-bpw$b.err
done

# optional cross-check against stock llama.cpp (LLAMA_QUANTIZE=path/to/llama-quantize): the standard
# files and one allocation are rebuilt byte for byte
if [ -n "${LLAMA_QUANTIZE:-}" ]; then
  for te in Q2_K: IQ3_M: Q4_K_M: Q2_K:q4_0 IQ3_M:iq4_nl Q4_K_M:q4_0; do
    t=${te%%:*}; e=${te##*:}; f=std-$t${e:+-emb}.gguf
    "$LLAMA_QUANTIZE" --imatrix imatrix.gguf ${e:+--token-embedding-type $e} base.gguf lq.gguf $t 2 > lq.log 2>&1
    cmp -s lq.gguf $f && echo "$f: identical to llama-quantize" || echo "$f: DIFFERS from llama-quantize"
  done
  "$LLAMA_QUANTIZE" --imatrix imatrix.gguf --tensor-type-file alloc-bpw4.9.gguf.tensor-types.txt base.gguf lq.gguf \
      Q4_K_M 2 > lq.log 2>&1
  cmp -s lq.gguf alloc-bpw4.9.gguf && echo "alloc-bpw4.9.gguf: identical to llama-quantize with its tensor-type file" \
      || echo "alloc-bpw4.9.gguf: DIFFERS from llama-quantize"
  rm -f lq.gguf
fi

# held-out evaluation: one table, one plot
F=(std-Q2_K alloc-Q2_K std-IQ3_M alloc-IQ3_M std-Q4_K_M alloc-Q4_K_M std-dynamic-gate alloc-dynamic-gate
   std-Q2_K-emb alloc-Q2_K-emb std-IQ3_M-emb alloc-IQ3_M-emb alloc-bpw4.9 std-Q4_K_M-emb alloc-Q4_K_M-emb)
tm compare ggufkit compare base.gguf "${F[@]/%/.gguf}" -f eval.txt -c 512 --chunks "$N" --plot allocation-gemma3.png \
    -t 2 > compare.md 2> compare.err
# the same rows (cached: no recomputation but the base's decode speed) as JSON, and the criteria per pair
ggufkit compare base.gguf "${F[@]/%/.gguf}" -f eval.txt -c 512 --chunks "$N" -t 2 -o json > compare.json 2> /dev/null
python "$REPO/tools/experiments/alloc_verdict.py" compare.json alloc-Q2_K:std-Q2_K alloc-IQ3_M:std-IQ3_M alloc-Q4_K_M:std-Q4_K_M \
    alloc-dynamic-gate:std-dynamic-gate alloc-Q2_K-emb:std-Q2_K-emb alloc-IQ3_M-emb:std-IQ3_M-emb \
    alloc-bpw4.9:std-Q4_K_M-emb alloc-Q4_K_M-emb:std-Q4_K_M-emb > verdict.md
cat compare.md verdict.md

# optional (COST_1B=1): the cost of measuring and allocating 1B parameters, on a random-weight
# gemma-3-1B-shaped F32 model (timing only; WORKDIR/cost1b, ~4 GB file, up to ~14 GB memory)
if [ -n "${COST_1B:-}" ]; then
  mkdir -p cost1b; cd cost1b
  [ -f g1b-f32.gguf ] || python "$REPO/tools/experiments/make_synthetic_base.py" "$(python "$REPO/tools/get_gemma3.py")" \
      g1b-f32.gguf --type f32 > gen.log
  [ -f imatrix.gguf ] || tm imatrix ggufkit imatrix g1b-f32.gguf -f ../calib.txt -c 512 --chunks 4 --no-ppl \
      -o imatrix.gguf -t 2 > imatrix.log 2>&1
  [ -f measure.time ] || tm measure python -c "
from ggufkit.measure import measure
m = measure('g1b-f32.gguf', 'imatrix.gguf', '../calib.txt')
print(m.seconds, m.n_params, m.units)" > measure.log 2>&1
  [ -f alloc-bpw8.gguf ] || tm budget ggufkit quantize --imatrix imatrix.gguf --calib-file ../calib.txt g1b-f32.gguf \
      alloc-bpw8.gguf --target-bpw 8 > budget.log 2> budget.err
  for s in imatrix measure budget; do echo "1B $s: $(cat $s.time)"; done
  tail -n 1 measure.log      # the seconds of the error and sensitivity phases
fi
