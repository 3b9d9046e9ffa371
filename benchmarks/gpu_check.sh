#!/usr/bin/env bash
# One GPU session (<= 6 minutes): unit tests on CUDA, benchmarks, CIFAR-10 recipe speed.
# Run from the repository root:   OUT=gpu_out bash benchmarks/gpu_check.sh
# Everything lands under $OUT (default ./gpu_out); each step runs even if an earlier one failed.
set -u
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
PY="${PYTHON:-python}"
STATUS="$OUT/steps.txt"
: > "$STATUS"

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, record the exit code, never abort the script
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s)
  echo "=== $name: $*" | tee -a "$OUT/$name.log"
  timeout --kill-after=10 "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$(( $(date +%s) - t0 ))" | tee -a "$STATUS"
}

{ nvidia-smi; "$PY" -c "import torch, torchvision, timm; print(torch.__version__, torchvision.__version__, timm.__version__, torch.cuda.get_device_name())"; } > "$OUT/env.log" 2>&1 || true

# (a) the unit tests on CUDA (the tests read COURSE_TEST_DEVICE)
step pytest_cuda 120 env COURSE_TEST_DEVICE=cuda "$PY" -m pytest tests -m "not slow" -p no:cacheprovider -o addopts="" -q -rfE
# (b) benchmarks: ours vs torchvision vs timm, attention kernels, digits recipe
step bench_cuda 90 "$PY" benchmarks/run.py --device cuda --out "$OUT/results_cuda.json"
# (c) the CIFAR-10 recipe's training speed on synthetic data, eager and compiled, MFU, projected times
step cifar_speed 140 "$PY" benchmarks/cifar_speed.py --out "$OUT/cifar_speed.json"

cat "$STATUS"
