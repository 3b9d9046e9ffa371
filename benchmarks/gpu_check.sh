#!/usr/bin/env bash
# One GPU session (the step timeouts add up to 550 s): the CIFAR-10 recipe's speed (the figure owed) and its
# profile, the augmentation's speed, the training tests on CUDA (the compiled loop too), benchmarks.
# The most wanted figures run first.
# Run from the repository root:   OUT=gpu_out bash benchmarks/gpu_check.sh
# Everything lands under $OUT (default ./gpu_out); each step runs even if an earlier one failed.
# PACK=FILE.tgz also packs $OUT into one file at the end (for a machine that sends back only a few files).
set -u
OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
PY="${PYTHON:-python3}"
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
#     MFU and projected times, merged into a copy of benchmarks/results.json ($OUT/results.json); then a
#     torch.profiler table of 40 steps of the whole loop ($OUT/profile.txt): where a step's time goes
cp benchmarks/results.json "$OUT/results.json"
step cifar_speed 280 "$PY" -m benchmarks.cifar_speed --out "$OUT/cifar_speed.json" --results "$OUT/results.json" --profile
# (b) the augmentation alone: AutoAugment per group of 16 (before) vs per image, batched (BatchAutoAugment)
step augment_speed 30 "$PY" -m benchmarks.augment_speed --device cuda --pairs 10 --out "$OUT/augment_speed.json"
# (c) the training, data and augmentation tests on CUDA (the tests read COURSE_TEST_DEVICE), and the
#     compiled loop (inductor + CUDA graphs) against eager
step pytest_cuda 90 env COURSE_TEST_DEVICE=cuda "$PY" -m pytest tests/test_train.py tests/test_data.py \
  tests/test_autoaugment.py -m "not slow" -p no:cacheprovider -o addopts="" -q -rfE
step pytest_compile 70 env COURSE_TEST_DEVICE=cuda "$PY" -m pytest tests/test_train.py -k compiled \
  -p no:cacheprovider -o addopts="" -q -rfE
# (d) benchmarks: ours vs torchvision vs timm (interleaved pairs), attention kernels
step bench_cuda 80 "$PY" -m benchmarks.run --device cuda --quick --out "$OUT/results_cuda.json"

cat "$STATUS"
if [ -n "${PACK:-}" ]; then tar -C "$OUT" -czf "$PACK" . && echo "packed into $PACK"; fi
