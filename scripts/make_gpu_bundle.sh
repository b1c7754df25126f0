#!/usr/bin/env bash
# Makes the bundle that scripts/gpu_check.sh runs on a lent GPU machine
# (docs/cuda.md, "Checking on a lent GPU"): the CUDA build's binaries, the
# non-system shared libraries they need, the configs and small pre-generated
# datasets, compressed into gpu_bundle/ipsnet-gpu.tar.xz (git-ignored; the
# device tool takes it with `carry: ["gpu_bundle"]`).
#
# The lent machine has CUDA 13, nvcc and PyTorch (whose nvidia-* wheels carry
# cuDNN, cuBLAS and NCCL) but none of our Debian libraries, no package
# registry, and the whole working tree plus what is carried must stay under
# 64 MiB. So the bundle holds OpenBLAS, oneDNN, yaml-cpp, libstdc++ and the
# rest that ldd names, but not the CUDA libraries (cuBLAS/cuBLASLt and cuDNN
# alone are over 1 GiB): gpu_check.sh finds those there at run time. Only the
# small CUDA runtime (libcudart) travels, as a fallback.
#
#   scripts/make_gpu_bundle.sh                 # build (build-gpu/) and bundle
#   scripts/make_gpu_bundle.sh --no-build      # bundle what build-gpu/ holds
# Environment: IPSNET_BUILD_DIR (build-gpu), GPU_BUNDLE_DIR (gpu_bundle),
# GPU_BUNDLE_LIMIT_MIB (56: what may travel beside the ~6 MiB working tree),
# BUNDLE_QUICKSTART_TRAIN / _TEST (1000 / 200 images for the GPU quickstart),
# GPU_BUNDLE_SOURCE (what the manifest names as the source when the tree is
# not a git checkout, e.g. "commit abc123 (git archive)").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${IPSNET_BUILD_DIR:-build-gpu}
DEST=${GPU_BUNDLE_DIR:-gpu_bundle}
LIMIT_MIB=${GPU_BUNDLE_LIMIT_MIB:-56}
QS_TRAIN=${BUNDLE_QUICKSTART_TRAIN:-1000}
QS_TEST=${BUNDLE_QUICKSTART_TEST:-200}
BUILD_FIRST=1
for a in "$@"; do
  case "$a" in
    --no-build) BUILD_FIRST=0 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "make_gpu_bundle: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
T0=$(date +%s)
BINS=(apps/ipsnet tests/test_cuda benchmarks/ips_memory)

if [[ $BUILD_FIRST == 1 ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DIPSNET_CUDA=ON >/dev/null
  ninja -C "$BUILD" -j"${JOBS:-2}" ipsnet test_cuda ips_memory
fi
for b in "${BINS[@]}"; do
  [[ -x "$BUILD/$b" ]] || { echo "make_gpu_bundle: $BUILD/$b missing (build it, or drop --no-build)" >&2; exit 1; }
done
grep -q '^IPSNET_CUDA:STRING=ON' "$BUILD/CMakeCache.txt" ||
  { echo "make_gpu_bundle: $BUILD is not a CUDA build (-DIPSNET_CUDA=ON)" >&2; exit 1; }

STAGE=$(mktemp -d /tmp/ipsnet_bundle.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
B=$STAGE/ipsnet-gpu
mkdir -p "$B/bin" "$B/lib" "$B/lib-compat" "$B/lib-fallback" "$B/configs" "$B/data"

# ---- binaries -----------------------------------------------------------------------
for b in "${BINS[@]}"; do
  cp "$BUILD/$b" "$B/bin/"
  strip --strip-unneeded "$B/bin/$(basename "$b")"
done

# ---- shared libraries ---------------------------------------------------------------
# Left out: the C library family and the loader (every Linux has them; see the
# glibc note in the manifest), the NVIDIA driver, and the CUDA libraries that
# gpu_check.sh finds on the lent machine.
is_system() {
  case "$1" in
    linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libutil.so*|libresolv.so*) return 0 ;;
    libcuda.so*|libnvidia-*) return 0 ;;
  esac
  return 1
}
# The compiler's runtime: the lent machine's own copy is newer (and is what
# its tools, compute-sanitizer among them, expect), so gpu_check.sh adds
# lib-compat/ only when the binaries do not resolve without it.
is_compat() {
  case "$1" in libstdc++.so*|libgcc_s.so*|libgomp.so*) return 0 ;; esac
  return 1
}
is_cuda_runtime_lib() {
  case "$1" in
    libcudart.so*|libcublas.so*|libcublasLt.so*|libcudnn*.so*|libnccl.so*|libnvrtc*.so*|libnvJitLink.so*|libcufft*|libcurand*|libcusparse*|libcusolver*) return 0 ;;
  esac
  return 1
}
declare -A RUNTIME=()
for f in "$B"/bin/*; do
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    if is_system "$name"; then continue; fi
    if is_cuda_runtime_lib "$name"; then RUNTIME[$name]=1; continue; fi
    [[ "$path" == "not" ]] && { echo "make_gpu_bundle: $f needs $name, which ldd cannot find here" >&2; exit 1; }
    dir=lib
    if is_compat "$name"; then dir=lib-compat; fi
    [[ -e "$B/$dir/$name" ]] || cp -L "$path" "$B/$dir/$name"
  done < <(ldd "$f")
done
# Dependencies of the copied libraries themselves (ldd above lists the whole
# tree, so this only double-checks that nothing is left unresolved).
for f in "$B"/lib/* "$B"/lib-compat/*; do
  if LD_LIBRARY_PATH="$B/lib:$B/lib-compat" ldd "$f" | grep -q 'not found'; then
    echo "make_gpu_bundle: $(basename "$f") has unresolved dependencies:" >&2
    LD_LIBRARY_PATH="$B/lib:$B/lib-compat" ldd "$f" | grep 'not found' >&2
    exit 1
  fi
done
for f in "$B"/lib/* "$B"/lib-compat/*; do strip --strip-unneeded "$f" 2>/dev/null || true; done
# The CUDA runtime is small: a fallback in case the lent machine lacks it.
CUDA_LIB=$(dirname "$(ldd "$B/bin/test_cuda" | awk '$1 ~ /^libcudart\.so/ {print $3; exit}')")
for n in "${!RUNTIME[@]}"; do
  case "$n" in libcudart.so*) cp -L "$CUDA_LIB/$n" "$B/lib-fallback/$n" ;; esac
done

# ---- configs and data ------------------------------------------------------------------
cp configs/mnist_official.yaml configs/quickstart.yaml "$B/configs/"
IPSNET="$BUILD/apps/ipsnet"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# ips_memory's dataset for the official config (benchmarks/ips_memory.cpp
# ensure_dataset: <root>/<side>-n<max(B,16)>, found through IPSNET_BENCH_DATA).
mkdir -p "$B/data/bench"
"$IPSNET" generate-data --style ips --width 1500 --height 1500 --n-train 16 --n-test 1 --quiet \
  "$B/data/bench/1500-n16" >/dev/null
# A short quickstart (configs/quickstart.yaml's canvases, fewer images).
"$IPSNET" generate-data --style ips --width 500 --height 500 --n-noise 10 --n-train "$QS_TRAIN" \
  --n-test "$QS_TEST" --quiet "$B/data/quickstart" >/dev/null

# ---- manifest ------------------------------------------------------------------------------
{
  echo "ipsnet GPU bundle"
  if [[ -n "${GPU_BUNDLE_SOURCE:-}" ]]; then
    echo "commit: $GPU_BUNDLE_SOURCE"  # e.g. a tree exported with git archive
  else
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  fi
  echo "made: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
  echo "cuda archs: $(sed -n 's/^IPSNET_CUDA_ARCHS:STRING=//p' "$BUILD/CMakeCache.txt")"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1 || echo '?')"
  echo "glibc needed by bin/ and lib/: $(for f in "$B"/bin/* "$B"/lib/*; do objdump -T "$f" 2>/dev/null; done |
    grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1) (lib-compat/: $(for f in "$B"/lib-compat/*; do
    objdump -T "$f" 2>/dev/null; done | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1))"
  echo "runtime libs (found on the GPU machine): ${!RUNTIME[*]}"
  echo "bundled libs: $(cd "$B/lib" && ls | tr '\n' ' ')"
  echo "compat libs (used only where the machine's own do not do): $(cd "$B/lib-compat" && ls | tr '\n' ' ')"
  echo "fallback libs: $(cd "$B/lib-fallback" && ls | tr '\n' ' ')"
} > "$B/MANIFEST"
printf '%s\n' "${!RUNTIME[@]}" | sort > "$B/runtime_libs.txt"

# ---- compress --------------------------------------------------------------------------------
mkdir -p "$DEST"
tar -C "$STAGE" -cf - ipsnet-gpu | xz -T"${JOBS:-2}" -9 > "$DEST/ipsnet-gpu.tar.xz.tmp"
mv "$DEST/ipsnet-gpu.tar.xz.tmp" "$DEST/ipsnet-gpu.tar.xz"
cp "$B/MANIFEST" "$DEST/MANIFEST"
SIZE=$(stat -c %s "$DEST/ipsnet-gpu.tar.xz")
RAW=$(du -sb "$B" | cut -f1)
printf 'make_gpu_bundle: %s: %.1f MiB (%.1f MiB unpacked) in %d s\n' "$DEST/ipsnet-gpu.tar.xz" \
  "$(echo "$SIZE / 1048576" | bc -l)" "$(echo "$RAW / 1048576" | bc -l)" $(( $(date +%s) - T0 ))
if (( SIZE > LIMIT_MIB * 1048576 )); then
  echo "make_gpu_bundle: over the ${LIMIT_MIB} MiB limit (the device tool carries 64 MiB with the tree)" >&2
  exit 1
fi
