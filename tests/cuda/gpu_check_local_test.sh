#!/usr/bin/env bash
# The CPU-side part of the GPU check, on a machine without a GPU: the bundle
# (scripts/make_gpu_bundle.sh) unpacks, its shared libraries resolve, the
# CUDA libraries are found where the lent machine has them (a PyTorch wheel
# layout, site-packages/nvidia/{cu13,cudnn}/lib, with the toolkit folders
# hidden; then the toolkit folders), the binaries start, test_cuda reports its
# no-GPU skips, and scripts/gpu_check.sh says that no GPU was found and exits
# 2; without a bundle it exits 3. Prints each run's wall time.
#
#   tests/cuda/gpu_check_local_test.sh [BUNDLE]     (default gpu_bundle/ipsnet-gpu.tar.xz)
# Exit 77 (ctest: skipped) without a bundle or on a machine with a GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${1:-${GPU_BUNDLE:-$PWD/gpu_bundle/ipsnet-gpu.tar.xz}}
if [[ ! -f "$BUNDLE" ]]; then
  echo "SKIPPED: no bundle at $BUNDLE (scripts/make_gpu_bundle.sh makes it)"
  exit 77
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIPPED: this machine has a GPU (run scripts/gpu_check.sh itself)"
  exit 77
fi
TMP=$(mktemp -d /tmp/gpu_check_test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
FAILS=0
check() {  # description, command...
  local what=$1
  shift
  if "$@"; then echo "  ok: $what"; else echo "  FAIL: $what"; FAILS=$((FAILS + 1)); fi
}
run_check() {  # label, out dir, env... -> sets RC, SUMMARY_FILE; prints the wall time
  local label=$1 out=$2
  shift 2
  local t0=$(date +%s)
  env -u LD_LIBRARY_PATH OUT="$out" GPU_CHECK_WORK="$TMP/work-$label" GPU_BUNDLE="$BUNDLE" "$@" \
    bash scripts/gpu_check.sh > "$TMP/$label.log" 2>&1
  RC=$?
  SUMMARY_FILE=$out/gpu_summary.txt
  echo "$label: exit $RC in $(( $(date +%s) - t0 )) s"
}

# Where this machine keeps the CUDA libraries the binaries need.
CUDART=$(ldconfig -p | awk '$1 == "libcudart.so.13" {print $NF; exit}')
[[ -n "$CUDART" ]] || CUDART=/usr/local/cuda/lib64/libcudart.so.13
CUDA_DIR=$(dirname "$(readlink -f "$CUDART")")
CUDNN=$(ldconfig -p | awk '$1 == "libcudnn.so.9" {print $NF; exit}')
[[ -n "$CUDNN" ]] || CUDNN=/usr/local/cuda/lib64/libcudnn.so.9
CUDNN_DIR=$(dirname "$(readlink -f "$CUDNN")")

# 1. Only a PyTorch-style wheel layout holds the CUDA libraries.
SITE=$TMP/site
mkdir -p "$SITE/nvidia/cu13/lib" "$SITE/nvidia/cudnn/lib" "$SITE/nvidia/nccl/lib"
for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do ln -s "$CUDA_DIR/$so" "$SITE/nvidia/cu13/lib/$so"; done
for f in "$CUDNN_DIR"/libcudnn*.so.9; do ln -s "$f" "$SITE/nvidia/cudnn/lib/$(basename "$f")"; done
echo "wheel layout in $SITE (toolkit folders hidden):"
run_check wheels "$TMP/out-wheels" GPU_CHECK_CUDA_DIRS= GPU_CHECK_SITE_DIRS="$SITE"
check "exit status 2 (no GPU)" test "$RC" = 2
check "summary written" test -s "$SUMMARY_FILE"
check "summary says no GPU was found" grep -q "overall: NO GPU FOUND" "$SUMMARY_FILE"
check "bundle unpacked" grep -qE '^PASS +unpack' "$SUMMARY_FILE"
check "libraries resolved" grep -qE '^PASS +libraries' "$SUMMARY_FILE"
check "cuBLAS found in the wheel layout" grep -q "libcublas.so.13: $SITE/nvidia/cu13/lib" "$SUMMARY_FILE"
check "cuDNN found in the wheel layout" grep -q "libcudnn.so.9: $SITE/nvidia/cudnn/lib" "$SUMMARY_FILE"
check "binaries start and test_cuda reports its skips" \
  grep -qE '^INFO +test_cuda_without_gpu .* [0-9]+ host tests passed, [1-9][0-9]* GPU tests skipped' "$SUMMARY_FILE"
check "logs archived" test -s "$TMP/out-wheels/gpu_logs.tar.gz"
tar -C "$TMP" -xzf "$TMP/out-wheels/gpu_logs.tar.gz" logs/libraries.log logs/test_cuda_nogpu.log 2>/dev/null
check "ldd resolves cuBLAS from the wheel layout" grep -q "libcublas.so.13 => $SITE/nvidia/cu13/lib/libcublas.so.13" \
  "$TMP/logs/libraries.log"
check "the skips name the reason" grep -q "no CUDA device: " "$TMP/logs/test_cuda_nogpu.log"
sed -n '1,40p' "$SUMMARY_FILE" | sed 's/^/    /'

# 2. The toolkit folders (the default search).
echo "default search:"
run_check default "$TMP/out-default"
check "exit status 2 (no GPU)" test "$RC" = 2
check "summary says no GPU was found" grep -q "overall: NO GPU FOUND" "$SUMMARY_FILE"
check "libraries resolved" grep -qE '^PASS +libraries' "$SUMMARY_FILE"

# 3. No bundle.
echo "no bundle:"
BUNDLE=$TMP/none.tar.xz run_check nobundle "$TMP/out-none"
check "exit status 3" test "$RC" = 3
check "summary names the missing bundle" grep -q "no bundle at" "$SUMMARY_FILE"

if (( FAILS > 0 )); then
  echo "gpu_check_local_test: $FAILS check(s) failed; the last log:"
  tail -30 "$TMP/nobundle.log" "$TMP/default.log" "$TMP/wheels.log"
  exit 1
fi
echo "gpu_check_local_test: all checks passed"
