#!/usr/bin/env bash
# Quick start: install what is missing, build a Release tree, simulate GPT-3 175B on 64 A100.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTRAINSIM_BUILD_TESTS=OFF -DTRAINSIM_BUILD_BENCH=OFF
cmake --build build -j"$(nproc)" --target trainsim
./build/sim/cli/trainsim simulate scenarios/gpt3-175b-a100.toml
