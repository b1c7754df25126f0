#!/usr/bin/env bash
# Fresh machine to green tests: installs the dependencies, builds everything
# (CUDA sources too when nvcc is present) into build/ (IPSNET_BUILD_DIR) and
# runs the whole test suite. scripts/quickstart.sh builds into build-main/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/get_mnist.sh || echo "test: MNIST digits unavailable; data tests that need them will fail"
scripts/build.sh "$@"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
ctest --test-dir "${IPSNET_BUILD_DIR:-build}" --output-on-failure -j2 --timeout 900
# libFuzzer on every reader (issue 19), opt-in here (.ci/run runs scripts/fuzz.sh
# itself, 30 s per harness; the sanitized build of fuzz/ takes under 3 min on 2
# cores). IPSNET_FUZZ_SECONDS=60 scripts/test.sh runs each for 60 s after the tests.
if [[ -n "${IPSNET_FUZZ_SECONDS:-}" ]]; then FUZZ_SECONDS=$IPSNET_FUZZ_SECONDS scripts/fuzz.sh; fi
