#!/usr/bin/env bash
# clang-tidy on sim/ with the checks listed (and justified) in .clang-tidy; any finding fails.
# Uses the compile commands of the Release build (scripts/test.sh configures it first).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
[ -f "$build/compile_commands.json" ] || cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
files=$(ls sim/*/*.cpp)
echo "== clang-tidy on $(echo "$files" | wc -w) files =="
echo "$files" | xargs -P"$(nproc)" -n4 clang-tidy -p "$build" --quiet 2>/dev/null
echo "clang-tidy: no findings"
