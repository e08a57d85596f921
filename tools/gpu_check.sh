#!/usr/bin/env bash
# One command for a lent GPU machine: install the carried wheels, run tools/conformance/gpu_check.py, leave the
# verdict in $OUT/gpu_check.json (written after every step) and exit with its status:
#   0 ok, 1 a correctness failure, 2 only speed below target, 3 could not start.
#
#   tools/gpu_check.sh                 # on the lent machine (the device tool runs it in the repo root)
#   tools/gpu_check.sh --emulate       # the same script on the CPU, tiny models (CI runs this)
#   tools/gpu_check.sh --skip sanitizer,speed --deadline 300
#
# The lent image has numpy, numba, pytest, pytest-timeout and cupy-cuda13x but no `gguf` and no
# network. Carry the wheels it lacks in .whl/ (ignored by git; name it in the device tool's
# `carry`), downloaded here with:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl gguf==0.19.0
# (gguf's own requirements numpy, pyyaml, requests, tqdm are on the image). A machine with
# cupy-cuda12x instead works the same; NVRTC 13 (cupy-cuda13x) cannot compile for GPUs older than
# sm_75, and the kernels then stop with a one-line error naming cupy-cuda12x.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-${TMPDIR:-/tmp}/gpu-check-out}"
mkdir -p "$OUT"
export OUT
if compgen -G ".whl/*.whl" > /dev/null; then
    SITE="${TMPDIR:-/tmp}/ggufkit-site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || echo "gpu_check.sh: installing .whl/ failed" >&2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version \
    --format=csv,noheader > "$OUT/nvidia-smi.txt" 2>&1
python3 -m tools.conformance.gpu_check --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
