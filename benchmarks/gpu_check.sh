#!/usr/bin/env bash
# One GPU session (<= 9 minutes): CIFAR-10 recipe speed (the figure owed), benchmarks, unit tests on CUDA.
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

# (a) the CIFAR-10 recipe's whole-loop speed on synthetic data: eager, compiled, CUDA graphs, batch sweep,
#     MFU and projected times; merged into a copy of benchmarks/results.json ($OUT/results.json)
cp benchmarks/results.json "$OUT/results.json"
step cifar_speed 330 "$PY" benchmarks/cifar_speed.py --out "$OUT/cifar_speed.json" --results "$OUT/results.json"
# (b) benchmarks: ours vs torchvision vs timm (interleaved pairs), attention kernels
step bench_cuda 120 "$PY" benchmarks/run.py --device cuda --quick --out "$OUT/results_cuda.json"
# (c) the unit tests of the training code on CUDA (the tests read COURSE_TEST_DEVICE)
step pytest_cuda 90 env COURSE_TEST_DEVICE=cuda "$PY" -m pytest tests/test_train.py tests/test_data.py -m "not slow" -p no:cacheprovider -o addopts="" -q -rfE

cat "$STATUS"
