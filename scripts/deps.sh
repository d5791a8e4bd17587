#!/usr/bin/env bash
# Installs the Debian 12 packages trainsim builds with, when any is missing (needs root).
set -euo pipefail
pkgs=(build-essential cmake libtomlplusplus-dev nlohmann-json3-dev libcli11-dev
      libboost-graph-dev libgtest-dev libbenchmark-dev libopenmpi-dev openmpi-bin
      clang libclang-rt-14-dev clang-tidy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages and not root; run: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
