#!/usr/bin/env bash
# Configures and builds ipsnet into build/ (Release, Ninja). The CUDA backend is
# built when nvcc and cuDNN are found (IPSNET_CUDA=AUTO); pass extra CMake
# arguments after the script name, e.g. scripts/build.sh -DIPSNET_CUDA=OFF.
# IPSNET_BUILD_DIR: another build directory (scripts/quickstart.sh uses
# build-main/); IPSNET_BUILD_TARGETS: ninja targets instead of `all`.
# CMake keeps options in the directory's cache, so one directory per option set
# avoids rebuilding everything each time the options change.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${IPSNET_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
ninja -C "$BUILD_DIR" "${IPSNET_BUILD_TARGETS:-all}"
