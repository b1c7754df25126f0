#!/usr/bin/env bash
# Configures and builds ipsnet into build/ (Release, Ninja). The CUDA backend is
# built when nvcc and cuDNN are found (IPSNET_CUDA=AUTO); pass extra CMake
# arguments after the script name, e.g. scripts/build.sh -DIPSNET_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${IPSNET_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
ninja -C "$BUILD_DIR" "${IPSNET_BUILD_TARGETS:-all}"
