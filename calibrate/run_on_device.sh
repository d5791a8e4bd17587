#!/usr/bin/env bash
# One-shot GPU run for a machine with an H100/H200 (issue 7, item 6): builds for sm_90, runs
# the GPU tests, calibrates the shapes of the shipped H100/H200 scenarios (plus the default
# grids and, with more than one GPU, the NCCL sweeps), then runs --validate on the two
# one-GPU scenarios with the profile just measured. Everything goes under $OUT (default
# ./calib-out): build and test logs, the profile h200-<date>.toml (named after the GPU), the
# calibration log and the validation tables. Designed to finish in under 8 minutes; each
# stage has its own time limit so a slow stage cannot eat the others.
#
#   OUT=/tmp/out bash calibrate/run_on_device.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/calib-out}"
mkdir -p "$OUT"
jobs="$(nproc)"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/run.log"; }

stamp "configure + build (sm_90, Release, $jobs jobs)"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
timeout 240 cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTRAINSIM_BUILD_BENCH=OFF \
  -DTRAINSIM_BUILD_CALIBRATE=ON -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/configure.log" 2>&1 &&
timeout 240 cmake --build build-gpu -j"$jobs" --target trainsim trainsim-calibrate \
  trainsim_gpu_tests > "$OUT/build.log" 2>&1
rc=$?
stamp "build rc=$rc"
if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; exit $rc; fi

stamp "GPU tests"
(cd build-gpu && timeout 90 ./tests/gpu/trainsim_gpu_tests) > "$OUT/gpu-tests.log" 2>&1
stamp "GPU tests rc=$?"
tail -5 "$OUT/gpu-tests.log"

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$gpu_name" in
  *H200*) tag=h200 ;; *H100*) tag=h100 ;; *) tag=gpu ;;
esac
profile="$OUT/$tag-$(date -u +%Y-%m-%d).toml"
cal=build-gpu/calibrate/trainsim-calibrate
stamp "calibrate -> $profile"
timeout 210 "$cal" --out "$profile" \
  --scenario scenarios/llama3-70b-h100.toml --scenario scenarios/llama3-405b-h100.toml \
  --scenario scenarios/validate-gpt2-small-h200.toml --scenario scenarios/validate-1b-h200.toml \
  --repeats 10 --warmup 3 --max-seconds 0.5 > "$OUT/calibrate.log" 2>&1
stamp "calibrate rc=$?"
tail -3 "$OUT/calibrate.log"

for sc in validate-gpt2-small-h200:45 validate-1b-h200:110; do
  limit=${sc#*:}; sc=${sc%:*}
  stamp "validate $sc (limit ${limit}s)"
  timeout "$limit" "$cal" --validate "scenarios/$sc.toml" --profile "$profile" \
    --warmup 1 --repeats 3 --max-seconds 1 \
    > "$OUT/validate-$sc.txt" 2> "$OUT/validate-$sc.log"
  stamp "validate $sc rc=$?"
  cat "$OUT/validate-$sc.txt"
done

# The simulator with the measured profile on the shipped H100/H200 scenarios.
for sc in llama3-70b-h100 validate-1b-h200; do
  sed "s|^\[cluster\]|[cluster]\nprofile = \"$profile\"|" "scenarios/$sc.toml" |
    sed "s|\.\./topologies/|$PWD/topologies/|" > "$OUT/$sc-measured.toml"
  build-gpu/sim/cli/trainsim simulate "$OUT/$sc-measured.toml" > "$OUT/simulate-$sc.txt" 2>&1
  stamp "simulate $sc with the profile rc=$?"
done
stamp "done"
