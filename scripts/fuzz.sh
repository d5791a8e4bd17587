#!/usr/bin/env bash
# Fuzzes the scenario, topology and hardware-profile loaders with libFuzzer (clang, ASan +
# UBSan) for a bounded time each (FUZZ_SECONDS, default 45), starting from the shipped files
# (profiles: fuzz/seeds/). A crash, sanitizer
# report, undocumented exception or timeout fails the run and leaves the input in
# build-fuzz/crashes/; turn it into a regression test (tests/test_config.cpp) before fixing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-45}"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRAINSIM_FUZZ=ON \
  -DTRAINSIM_BUILD_TESTS=OFF -DTRAINSIM_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_scenario fuzz_topology fuzz_profile
mkdir -p build-fuzz/crashes
status=0
for target in scenario topology profile; do
  corpus="build-fuzz/corpus-$target"
  mkdir -p "$corpus"
  case "$target" in
    scenario) cp scenarios/*.toml "$corpus"/ ;;
    topology) cp topologies/*.toml "$corpus"/ ;;
    profile) cp fuzz/seeds/profile-*.toml "$corpus"/ ;;
  esac
  echo "== fuzzing the $target loader for ${seconds}s =="
  if ! ./build-fuzz/fuzz/fuzz_$target "$corpus" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=build-fuzz/crashes/$target- \
       2> "build-fuzz/fuzz-$target.log"; then
    tail -40 "build-fuzz/fuzz-$target.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "build-fuzz/fuzz-$target.log" || true
  fi
done
exit $status
