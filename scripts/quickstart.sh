#!/usr/bin/env bash
# Fresh machine to the main job: installs the dependencies, builds, and runs
# ipsnet on its built-in default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/get_mnist.sh
scripts/build.sh
build/apps/ipsnet --help
