#!/usr/bin/env bash
# Part 7 in one command on a GPU machine that has PyTorch but neither ecgtune's other dependencies nor a
# package index (the lent H200 image). Installs wheels carried in .whl/ (pydantic and its
# dependencies: the shipped search spaces are read through ecgtune.spec), runs the CUDA-only tests of
# the training loop, then `python3 -m bench.gpu`. Everything lands in ${OUT:-bench/results}: nvidia-smi.txt,
# cuda-tests.log, gpu.log and gpu.json (rewritten after each part, so a cut-short run keeps its parts).
#
#   bash bench/gpu_on_device.sh                      # all parts
#   bash bench/gpu_on_device.sh --parts packing      # extra arguments go to bench.gpu
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# Fail in seconds, not after the first models, if the carried wheels do not fit this Python.
python3 -V
python3 -c "import ecgtune.spec, ecgtune.train" || { echo "ecgtune does not import: wheels for this Python in .whl/?"; exit 1; }
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k "cuda or batches or optimiser" 2>&1 | tee "$out/cuda-tests.log"
timeout "${GPU_BENCH_TIMEOUT:-500}" python3 -m bench.gpu --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
