#!/usr/bin/env bash
# Builds and runs every test: a Release build (tests + benches compiled), an
# AddressSanitizer + UndefinedBehaviorSanitizer build of the whole suite, clang-tidy on sim/
# and a bounded libFuzzer run of the input loaders (FUZZ_SECONDS each, default 45).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs="$(nproc)"

echo "== Release build and tests =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTRAINSIM_BUILD_TESTS=ON -DTRAINSIM_BUILD_BENCH=ON
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== ASan + UBSan build and tests =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTRAINSIM_SANITIZE=ON \
      -DTRAINSIM_BUILD_TESTS=ON -DTRAINSIM_BUILD_BENCH=OFF
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
   ctest --output-on-failure -j"$jobs")

echo "== clang-tidy =="
bash scripts/tidy.sh build

echo "== fuzzing the loaders =="
bash scripts/fuzz.sh
