#!/usr/bin/env bash
# Fresh Debian machine to the main job: installs the dependencies, builds the
# `ipsnet` command, fetches the MNIST digits, generates a small Megapixel MNIST
# set, trains IPS with configs/quickstart.yaml, evaluates the best checkpoint
# and draws attention maps. Everything lands in data/quickstart and runs/.
# The command is built into its own directory, build-main/ (QUICKSTART_BUILD_DIR),
# so it never reconfigures the test command's build/ with other options.
# Size knobs: QUICKSTART_TRAIN, QUICKSTART_TEST, QUICKSTART_NOISE, QUICKSTART_DATA,
# QUICKSTART_SET ('key=value;key=value' overrides of configs/quickstart.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
scripts/install_deps.sh
scripts/get_mnist.sh
# The CUDA backend is built only where a GPU driver answers (it is slow to compile).
CUDA=OFF
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then CUDA=AUTO; fi
BUILD_DIR=${QUICKSTART_BUILD_DIR:-build-main}
IPSNET_BUILD_DIR=$BUILD_DIR IPSNET_BUILD_TARGETS=ipsnet \
  scripts/build.sh -DIPSNET_CUDA=$CUDA -DIPSNET_BUILD_TESTS=OFF -DIPSNET_BUILD_BENCHMARKS=OFF
IPSNET=$BUILD_DIR/apps/ipsnet
DATA=${QUICKSTART_DATA:-data/quickstart}
if [[ ! -f "$DATA/parameters.json" ]]; then
  $IPSNET generate-data --style ips --width 500 --height 500 --n-noise ${QUICKSTART_NOISE:-10} \
    --n-train ${QUICKSTART_TRAIN:-2000} --n-test ${QUICKSTART_TEST:-300} "$DATA"
fi
RUN=$($IPSNET train --config configs/quickstart.yaml --data "$DATA" --out runs ${QUICKSTART_SET:+--set "$QUICKSTART_SET"})
$IPSNET eval --checkpoint "$RUN/checkpoint_best.safetensors" --data "$DATA" --predictions "$RUN/predictions.csv"
$IPSNET attention-maps --checkpoint "$RUN/checkpoint_best.safetensors" --data "$DATA" --images 0-3 --tiles \
  --all-scores --out "$RUN/attention_maps"
echo "quickstart done in $(( $(date +%s) - T0 )) s: run directory $RUN"
