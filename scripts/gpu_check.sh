#!/usr/bin/env bash
# The GPU check, one prepared script for a lent NVIDIA machine (H100/H200,
# CUDA 13 driver and nvcc, PyTorch with its nvidia-* wheels, no package
# registry, none of our Debian libraries). It unpacks the bundle made here by
# scripts/make_gpu_bundle.sh, finds cuBLAS, cuDNN and the CUDA runtime on the
# machine, and runs, each step with its own time limit and going on after a
# failure:
#   env         the GPU, the driver (new enough for CUDA 13), the libraries found, `ipsnet info`
#   test_cuda   every CUDA test, which must report zero skipped (else the GPU was not used);
#               per-test lines for top-k (NaNs, ties, three size regimes), the large pageable
#               and pinned transfers, the IPS selection parity and bfloat16 (cuBLAS, cuDNN)
#   sync        convolution, batch norm and the ResNet training step with IPSNET_CUDA_SYNC=1
#   sanitizer   compute-sanitizer racecheck, synccheck and memcheck over the reduction,
#               softmax, norm, top-k and indexing tests (skipped when too little time is left)
#   ips_memory  the official config's training step on the GPU: s/step and peak allocated,
#               against the reference's 374.9 ms and 1.84 GiB (SPEC section 8)
#   quickstart  a short quickstart training (configs/quickstart.yaml, 2 epochs) and eval on the GPU
#   if time is left: ips_memory with the shortcuts off, then with precision: bf16 (cuDNN and
#               cuBLAS bfloat16 tensor-core paths, issue 17) against the float32 step above
# and writes one summary file. Exit status: 0 every check passed; 1 some
# failed; 2 no usable GPU (the summary says why); 3 the bundle could not be
# unpacked or its libraries resolved.
#
#   bash scripts/gpu_check.sh                      # on the device machine, from the repo root
#     (device tool: command "bash scripts/gpu_check.sh", carry ["gpu_bundle"], timeout_s 540)
# Environment: GPU_BUNDLE (gpu_bundle/ipsnet-gpu.tar.xz), GPU_CHECK_SUMMARY
# ($OUT/gpu_summary.txt, else /tmp/ipsnet_gpu_check_out/gpu_summary.txt),
# GPU_CHECK_BUDGET (420 s: the whole script stays under 8 minutes),
# GPU_CHECK_ONLY (a rerun of some steps: any of "test_cuda sync sanitizer
# ips_memory quickstart ips_memory_no_shortcuts ips_memory_bf16"; unpack, libraries and env
# always run),
# GPU_CHECK_WORK (/tmp/ipsnet_gpu_check), GPU_CHECK_CUDA_DIRS and
# GPU_CHECK_SITE_DIRS (where to look for the CUDA libraries, see find_libs;
# tests/cuda/gpu_check_local_test.sh points them at a fake wheel layout).
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/.."
REPO=$PWD
BUDGET=${GPU_CHECK_BUDGET:-420}
ONLY=${GPU_CHECK_ONLY:-}
want() { [[ -z "$ONLY" || " $ONLY " == *" $1 "* ]]; }
OUTDIR=${OUT:-/tmp/ipsnet_gpu_check_out}
mkdir -p "$OUTDIR"
SUMMARY=${GPU_CHECK_SUMMARY:-$OUTDIR/gpu_summary.txt}
BUNDLE=${GPU_BUNDLE:-$REPO/gpu_bundle/ipsnet-gpu.tar.xz}
WORK=${GPU_CHECK_WORK:-/tmp/ipsnet_gpu_check}
LOGS=$WORK/logs
B=$WORK/ipsnet-gpu
THREADS=$(nproc 2>/dev/null || echo 4)

# ---- bookkeeping -------------------------------------------------------------------------
RESULTS=()   # "STATUS|name|seconds|detail"
FIGURES=()   # free lines for the summary
FAILED=0
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
record() {  # status name seconds detail
  RESULTS+=("$1|$2|$3|$4")
  [[ "$1" == FAIL || "$1" == TIMEOUT ]] && FAILED=$((FAILED + 1))
  printf 'gpu_check: %-7s %-28s %4ss  %s\n' "$1" "$2" "$3" "$4"
}
write_summary() {  # final status line
  {
    echo "ipsnet GPU check — $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
    [[ -f "$B/MANIFEST" ]] && sed -n 's/^commit: /bundle commit: /p; s/^made: /bundle made: /p' "$B/MANIFEST"
    echo "script wall time: $(elapsed) s (budget $BUDGET s)"
    echo
    printf '%-7s  %-30s %6s  %s\n' status check seconds detail
    for r in "${RESULTS[@]}"; do
      IFS='|' read -r st name sec det <<<"$r"
      printf '%-7s  %-30s %6s  %s\n' "$st" "$name" "$sec" "$det"
    done
    if ((${#FIGURES[@]})); then
      echo
      printf '%s\n' "${FIGURES[@]}"
    fi
    echo
    echo "$1"
    echo "logs: $OUTDIR/gpu_logs.tar.gz (one file per step)"
  } > "$SUMMARY"
  tar -C "$WORK" -czf "$OUTDIR/gpu_logs.tar.gz" logs 2>/dev/null
  echo
  cat "$SUMMARY"
}
finish() {  # exit code, final line
  write_summary "$2"
  exit "$1"
}
# run_step name max_seconds reserve_seconds command...: runs with a limit of
# min(max, time left - reserve), logs to $LOGS/name.log; sets STEP_RC, STEP_SECS.
run_step() {
  local name=$1 max=$2 reserve=$3
  shift 3
  local lim=$(( $(left) - reserve ))
  (( lim > max )) && lim=$max
  STEP_RC=-1
  STEP_SECS=0
  if (( lim < 10 )); then
    return 1
  fi
  local t=$(date +%s)
  timeout -k 10 "$lim" "$@" > "$LOGS/$name.log" 2>&1
  STEP_RC=$?
  STEP_SECS=$(( $(date +%s) - t ))
  STEP_LIMIT=$lim
  return 0
}
status_of() {  # rc -> PASS / FAIL / TIMEOUT
  case "$1" in 0) echo PASS ;; 124|137) echo TIMEOUT ;; *) echo FAIL ;; esac
}

# ---- unpack -------------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$LOGS"
if [[ ! -f "$BUNDLE" ]]; then
  record FAIL unpack 0 "no bundle at $BUNDLE: make it with scripts/make_gpu_bundle.sh and carry gpu_bundle/ (building here is not possible: OpenBLAS, oneDNN, yaml-cpp, GoogleTest and Google Benchmark are Debian packages this machine lacks)"
  finish 3 "overall: NOT RUN (no bundle)"
fi
t=$(date +%s)
if command -v xz >/dev/null 2>&1; then
  xz -dc "$BUNDLE" | tar -x -C "$WORK"
else
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$BUNDLE" "$WORK"
fi
if [[ ! -x "$B/bin/test_cuda" ]]; then
  record FAIL unpack $(( $(date +%s) - t )) "$BUNDLE did not unpack to $B/bin"
  finish 3 "overall: NOT RUN (bundle unreadable)"
fi
record PASS unpack $(( $(date +%s) - t )) "$(du -sm "$B" | cut -f1) MiB in $B"

# ---- libraries ------------------------------------------------------------------------------
# The CUDA libraries the binaries were linked against (runtime_libs.txt) are
# looked up, in this order, in the CUDA toolkit folders, in the nvidia-*
# wheels of every Python site-packages (PyTorch's cuDNN, cuBLAS, NCCL), in
# ldconfig's cache, and at last by a bounded search of the file system.
# cuDNN 9 loads its sub-libraries (libcudnn_cnn, _ops, _engines_*) from the
# folder of libcudnn.so.9 at run time: that folder must hold them too.
cuda_dirs() {
  if [[ -n "${GPU_CHECK_CUDA_DIRS+x}" ]]; then
    tr ':' '\n' <<<"$GPU_CHECK_CUDA_DIRS"
    return
  fi
  local d
  for d in ${CUDA_HOME:-} ${CUDA_PATH:-} /usr/local/cuda /usr/local/cuda-13* /usr/local/cuda-1[0-9]* /opt/cuda; do
    [[ -n "$d" ]] || continue
    echo "$d/lib64"
    echo "$d/targets/x86_64-linux/lib"
    echo "$d/lib"
  done
}
site_dirs() {
  if [[ -n "${GPU_CHECK_SITE_DIRS+x}" ]]; then
    tr ':' '\n' <<<"$GPU_CHECK_SITE_DIRS"
    return
  fi
  local py
  for py in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
    command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null
  done
  ls -d /opt/*/.venv/lib/python3*/site-packages /usr/local/lib/python3*/dist-packages \
    /usr/local/lib/python3*/site-packages /usr/lib/python3/dist-packages 2>/dev/null
}
lib_candidates() {  # folders that may hold CUDA libraries, in search order, once each
  {
    cuda_dirs
    local s
    while read -r s; do
      [[ -d "$s/nvidia" ]] || continue
      ls -d "$s"/nvidia/cu13/lib "$s"/nvidia/*/lib "$s"/nvidia/*/lib64 2>/dev/null
    done < <(site_dirs | awk 'NF && !seen[$0]++')
    while read -r s; do
      [[ -d "$s/torch/lib" ]] && echo "$s/torch/lib"
    done < <(site_dirs | awk 'NF && !seen[$0]++')
  } | awk 'NF && !seen[$0]++' | while read -r d; do [[ -d "$d" ]] && echo "$d"; done
}
find_lib() {  # soname [quick] -> folder holding it (empty if none); quick: no file-system search
  local so=$1 quick=${2:-} d
  for d in "${CANDIDATES[@]}"; do
    if [[ -e "$d/$so" ]]; then echo "$d"; return; fi
  done
  if [[ -z "${GPU_CHECK_CUDA_DIRS+x}" ]]; then
    d=$(ldconfig -p 2>/dev/null | awk -v so="$so" '$1 == so {print $NF; exit}')
    if [[ -n "$d" ]]; then dirname "$d"; return; fi
    [[ -n "$quick" ]] && return
    d=$(timeout 20 find / -xdev \( -path /proc -o -path /sys -o -path "$WORK" \) -prune -o -name "$so" -print 2>/dev/null | head -1)
    [[ -n "$d" ]] && dirname "$d"
  fi
}
t=$(date +%s)
mapfile -t CANDIDATES < <(lib_candidates)
LIBDIRS=()
LIBNOTES=()
MISSING=()
add_dir() { local d; for d in "${LIBDIRS[@]}"; do [[ "$d" == "$1" ]] && return; done; LIBDIRS+=("$1"); }
while read -r so; do
  [[ -n "$so" ]] || continue
  d=$(find_lib "$so")
  if [[ -z "$d" && -e "$B/lib-fallback/$so" ]]; then
    d=$B/lib-fallback
  fi
  if [[ -z "$d" ]]; then
    MISSING+=("$so")
    LIBNOTES+=("$so: not found")
    continue
  fi
  add_dir "$d"
  LIBNOTES+=("$so: $d")
  if [[ "$so" == libcudnn.so.* ]]; then
    for sub in libcudnn_graph libcudnn_ops libcudnn_cnn libcudnn_engines_precompiled libcudnn_engines_runtime_compiled libcudnn_heuristic; do
      if [[ ! -e "$d/$sub.so.${so##*.so.}" ]]; then
        sd=$(find_lib "$sub.so.${so##*.so.}" quick)
        if [[ -n "$sd" ]]; then add_dir "$sd"; else LIBNOTES+=("$sub.so.${so##*.so.}: not found (cuDNN loads it on demand)"); fi
      fi
    done
  fi
done < "$B/runtime_libs.txt"
# Loaded on demand by cuDNN's run-time compiled engines: their folders go on
# the path when found (nothing fails without them).
for so in libnvrtc.so.13 libnvJitLink.so.13; do
  d=$(find_lib "$so" quick)
  if [[ -n "$d" ]]; then add_dir "$d"; LIBNOTES+=("$so: $d (optional)"); fi
done
# The driver's libcuda.so.1: the CUDA runtime loads it through the usual search.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib; do
    if [[ -e "$d/libcuda.so.1" ]]; then add_dir "$d"; LIBNOTES+=("libcuda.so.1: $d (not in ldconfig's cache)"); break; fi
  done
fi
LD_BASE=$B/lib
for d in "${LIBDIRS[@]}"; do LD_BASE=$LD_BASE:$d; done
# Our compiler runtime (lib-compat) only where the machine's own does not do.
unresolved() { LD_LIBRARY_PATH=$1 ldd -r "$B/bin/$2" 2>&1 | grep -E 'not found' | sort -u; }
LDP=$LD_BASE
for bin in ipsnet test_cuda ips_memory; do
  if [[ -n "$(unresolved "$LDP" "$bin")" ]]; then LDP=$LD_BASE:$B/lib-compat; break; fi
done
export LD_LIBRARY_PATH=$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
UNRES=""
for bin in ipsnet test_cuda ips_memory; do
  u=$(unresolved "$LD_LIBRARY_PATH" "$bin")
  [[ -n "$u" ]] && UNRES+="$bin: $(echo "$u" | tr '\n' ';' | tr -s ' \t' ' ') "
done
{
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  printf '%s\n' "${LIBNOTES[@]}"
  echo "candidate folders:"
  printf '  %s\n' "${CANDIDATES[@]}"
  for bin in ipsnet test_cuda ips_memory; do echo "== ldd $bin"; ldd "$B/bin/$bin"; done
} > "$LOGS/libraries.log" 2>&1
if [[ -n "$UNRES" ]]; then
  record FAIL libraries $(( $(date +%s) - t )) "unresolved: $UNRES(see libraries.log)"
  finish 3 "overall: NOT RUN (shared libraries missing: ${MISSING[*]:-see libraries.log})"
fi
record PASS libraries $(( $(date +%s) - t )) "$(IFS=';'; echo "${LIBNOTES[*]}")$([[ "$LDP" == *lib-compat ]] && echo '; bundled libstdc++/libgomp in use')"

# ---- env: GPU, driver, `ipsnet info` -----------------------------------------------------
t=$(date +%s)
IPSNET=$B/bin/ipsnet
"$IPSNET" info > "$LOGS/info.log" 2>&1
INFO_RC=$?
SMI=""
if command -v nvidia-smi >/dev/null 2>&1; then
  SMI=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | head -4)
  timeout 20 nvidia-smi >> "$LOGS/info.log" 2>&1
fi
DEVICES=$(awk '/^devices/{d=1; next} d && /^  cuda:/' "$LOGS/info.log")
WHY=$(sed -n 's/^  no usable CUDA device: //p' "$LOGS/info.log")
DRIVER_CUDA=$(sed -n 's/^  CUDA driver *//p' "$LOGS/info.log" | head -1)
DRIVER=$(echo "$SMI" | head -1 | cut -d, -f2 | tr -d ' ')
ENV_DETAIL="driver ${DRIVER:-?} (CUDA ${DRIVER_CUDA:-?}); $(echo "$DEVICES" | head -1 | sed 's/^ *//')"
if [[ $INFO_RC -ne 0 ]]; then
  record FAIL env $(( $(date +%s) - t )) "ipsnet info failed (rc $INFO_RC): $(tail -2 "$LOGS/info.log" | tr '\n' ' ')"
elif [[ -z "$DEVICES" ]]; then
  record FAIL env $(( $(date +%s) - t )) "no usable CUDA device: ${WHY:-unknown}; nvidia-smi: ${SMI:-absent}"
  # Show that the binaries start and which tests skip without a device.
  run_step test_cuda_nogpu 120 0 "$B/bin/test_cuda" --gtest_brief=1
  SK=$(sed -n 's/.*\[  SKIPPED \] \([0-9]*\) tests\{0,1\}.*/\1/p' "$LOGS/test_cuda_nogpu.log" | head -1)
  PA=$(sed -n 's/.*\[  PASSED  \] \([0-9]*\) tests\{0,1\}.*/\1/p' "$LOGS/test_cuda_nogpu.log" | head -1)
  record "$( [[ $STEP_RC == 0 ]] && echo INFO || status_of "$STEP_RC")" test_cuda_without_gpu "$STEP_SECS" \
    "binaries start; ${PA:-0} host tests passed, ${SK:-?} GPU tests skipped (\"no CUDA device: ...\")"
  finish 2 "overall: NO GPU FOUND — nothing ran on a GPU ($WHY)"
else
  major=${DRIVER%%.*}
  if [[ -n "$major" && "$major" =~ ^[0-9]+$ && $major -lt 580 ]]; then
    record FAIL env $(( $(date +%s) - t )) "$ENV_DETAIL: driver older than 580 (CUDA 13 needs >= 580)"
  else
    record PASS env $(( $(date +%s) - t )) "$ENV_DETAIL"
  fi
fi
FIGURES+=("GPU: ${SMI:-$DEVICES}")
FIGURES+=("libraries: $(grep -E '^  (CUDA runtime|CUDA driver|cuDNN|cuBLAS)' "$LOGS/info.log" | sed 's/^  //; s/  */ /g' | tr '\n' ';')")

# Time kept back for the headline figures while the earlier checks run.
RESERVE_FIGURES=170

# ---- test_cuda: every CUDA test, zero skipped ---------------------------------------------
if ! want test_cuda; then
  :
elif run_step test_cuda 150 $RESERVE_FIGURES env OMP_NUM_THREADS=$THREADS "$B/bin/test_cuda" --gtest_brief=0 \
    --gtest_output="xml:$LOGS/test_cuda.xml"; then
  L=$LOGS/test_cuda.log
  SK=$(sed -n 's/.*\[  SKIPPED \] \([0-9]*\) tests\{0,1\}.*/\1/p' "$L" | head -1)
  PA=$(sed -n 's/.*\[  PASSED  \] \([0-9]*\) tests\{0,1\}.*/\1/p' "$L" | head -1)
  FA=$(sed -n 's/.*\[  FAILED  \] \([0-9]*\) tests\{0,1\}, listed below.*/\1/p' "$L" | head -1)
  FNAMES=$(grep -E '^\[  FAILED  \] [A-Za-z_0-9./]+$' "$L" | sed 's/\[  FAILED  \] //' | sort -u | tr '\n' ' ')
  st=$(status_of "$STEP_RC")
  [[ "$st" == PASS && "${SK:-0}" != 0 ]] && st=FAIL
  det="${PA:-0} passed, ${SK:-0} skipped, ${FA:-0} failed"
  [[ "${SK:-0}" != 0 ]] && det+=" (a skip means the GPU was not used: $(grep -m1 'no CUDA device' "$L" | sed 's/^ *//'))"
  [[ -n "$FNAMES" ]] && det+=": $FNAMES"
  [[ $STEP_RC == 124 || $STEP_RC == 137 ]] && det+=" (stopped at the ${STEP_LIMIT}s limit)"
  [[ -z "$PA" && $STEP_RC != 0 ]] && det+="; ended with: $(tail -3 "$L" | tr '\n' ' ')"
  record "$st" test_cuda "$STEP_SECS" "$det"
  # One line each for the tests the issue names.
  for tn in CudaParity.TopkWithNansAndTiesInEachSizeRegime CudaParity.LargeTransfersPageableAndPinned \
            CudaParity.IpsSelectionSelectsTheSamePatches CudaParity.ConvAlgorithmSearchStaysOutOfThePeak \
            CudaParity.ReductionsAtRealSizes CudaParity.IndexErrorsAreReportedAtTheNextSynchronisation \
            CudaParity.Bf16GemmThroughCublas CudaParity.Bf16MatmulAndLinearGradients \
            CudaParity.Bf16ConvForwardBackwardDataAndFilter; do
    line=$(grep -E "^\[ +(OK|FAILED|SKIPPED) +\] $tn \(" "$L" | head -1)
    case "$line" in
      *"[       OK ]"*) st=PASS ;;
      *FAILED*) st=FAIL ;;
      *SKIPPED*) st=SKIP ;;
      *) st=NOTRUN ;;
    esac
    ms=$(echo "$line" | sed -n 's/.*(\([0-9]*\) ms).*/\1/p')
    RESULTS+=("$st|  ${tn#CudaParity.}|$(( ${ms:-0} / 1000 ))|(in test_cuda)")
  done
else
  record SKIP test_cuda 0 "no time left"
fi

# ---- the same with a synchronisation after every launch --------------------------------------
if ! want sync; then
  :
elif run_step sync 90 $RESERVE_FIGURES env IPSNET_CUDA_SYNC=1 OMP_NUM_THREADS=$THREADS "$B/bin/test_cuda" \
    --gtest_filter='CudaParity.ConvAndPooling:CudaParity.ConvWithoutInputChannelsOrOutputs:CudaParity.BatchNorm:CudaParity.ResNetTrainingStep:CudaParity.IpsSelectionSelectsTheSamePatches'; then
  det=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$LOGS/sync.log" | tr '\n' ' ')
  [[ -z "$det" ]] && det="ended with: $(tail -3 "$LOGS/sync.log" | tr '\n' ' ')"
  st=$(status_of "$STEP_RC")
  grep -qE '^\[  SKIPPED \] [0-9]+ tests?' "$LOGS/sync.log" && [[ $st == PASS ]] && st=FAIL
  record "$st" "sync (IPSNET_CUDA_SYNC=1)" "$STEP_SECS" "conv, batch norm, ResNet step, IPS selection: $det"
else
  record SKIP "sync (IPSNET_CUDA_SYNC=1)" 0 "no time left"
fi

# ---- compute-sanitizer --------------------------------------------------------------------------
SAN=$(command -v compute-sanitizer 2>/dev/null)
for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/compute-sanitizer/compute-sanitizer; do
  [[ -z "$SAN" && -x "$c" ]] && SAN=$c
done
SAN_FILTER='CudaParity.Reductions:CudaParity.ReductionsAtRealSizes:CudaParity.SoftmaxAndLayerNorm:CudaParity.BatchNorm:CudaParity.Topk*:CudaParity.Indexing:CudaParity.IndexErrorsAreReportedAtTheNextSynchronisation:CudaParity.CutPatches'
for tool in racecheck synccheck memcheck; do
  want sanitizer || break
  if [[ -z "$SAN" ]]; then
    record SKIP "sanitizer $tool" 0 "compute-sanitizer not found"
    continue
  fi
  if run_step "sanitizer_$tool" 75 $RESERVE_FIGURES env OMP_NUM_THREADS=$THREADS IPSNET_TEST_SMALL=1 "$SAN" --tool "$tool" \
      --error-exitcode 99 --print-limit 20 "$B/bin/test_cuda" --gtest_filter="$SAN_FILTER"; then
    L=$LOGS/sanitizer_$tool.log
    summ=$(grep -E '========= (ERROR SUMMARY|RACECHECK SUMMARY)' "$L" | tail -1 | sed 's/=* *//')
    st=$(status_of "$STEP_RC")
    if grep -qE 'Device not supported|Target application terminated before first instrumented API call|Unable to find injection library' "$L"; then
      st=SKIP
      summ="compute-sanitizer cannot instrument this machine: $(grep -m1 -E 'Device not supported|terminated|injection' "$L" | sed 's/=* *//')"
    fi
    record "$st" "sanitizer $tool" "$STEP_SECS" "${summ:-see sanitizer_$tool.log} (tests at IPSNET_TEST_SMALL sizes)$( [[ $STEP_RC == 124 || $STEP_RC == 137 ]] && echo " (limit ${STEP_LIMIT}s)")"
  else
    record SKIP "sanitizer $tool" 0 "no time left (kept for the figures)"
  fi
done

# ---- ips_memory: the official config's training step ----------------------------------------
REF_MS=374.9
REF_GIB=1.84
# ips_memory_step name max reserve label extra-args...
ips_memory_step() {
  local name=$1 max=$2 reserve=$3 label=$4
  shift 4
  if ! run_step "$name" "$max" "$reserve" env IPSNET_BENCH_DATA="$B/data/bench" OMP_NUM_THREADS=$THREADS \
      "$B/bin/ips_memory" --config "$B/configs/mnist_official.yaml" --device cuda --steps 5 "$@"; then
    record SKIP "$name" 0 "no time left"
    return
  fi
  local L=$LOGS/$name.log line sps peak resv st det
  line=$(grep -E 'ips_memory: .* s/step' "$L" | tail -1)
  sps=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) s\/step.*/\1/p')
  peak=$(echo "$line" | sed -n 's/.*peak alloc \([0-9.]*\) MiB.*/\1/p')
  resv=$(echo "$line" | sed -n 's/.*reserved \([0-9.]*\) MiB.*/\1/p')
  st=$(status_of "$STEP_RC")
  [[ "$st" == PASS && -z "$sps" ]] && st=FAIL
  if [[ -n "$sps" && -n "$peak" ]]; then
    det=$(awk -v s="$sps" -v p="$peak" -v r="${resv:-0}" -v rms=$REF_MS -v rg=$REF_GIB 'BEGIN {
      printf "%.1f ms/step (reference %.1f ms: x%.2f), peak allocated %.2f GiB (reference %.2f GiB: x%.2f), reserved %.2f GiB",
        s * 1000, rms, s * 1000 / rms, p / 1024, rg, p / 1024 / rg, r / 1024 }')
    FIGURES+=("official config (B=16, N=900, M=I=100, eager, $label) on the GPU: $det")
  else
    det="no figures: $(tail -3 "$L" | tr '\n' ' ')"
  fi
  record "$st" "$name" "$STEP_SECS" "$det"
}
want ips_memory && ips_memory_step ips_memory 150 75 "exact shortcuts on (the default)"

# ---- a short quickstart on the GPU ----------------------------------------------------------------
QS=$B/data/quickstart
if ! want quickstart; then
  :
elif run_step quickstart_train 110 25 env OMP_NUM_THREADS=$THREADS "$IPSNET" train --config "$B/configs/quickstart.yaml" \
    --data "$QS" --out "$WORK/runs" --set "device=cuda;n_epoch=2;n_epoch_warmup=1"; then
  L=$LOGS/quickstart_train.log
  RUN=$(grep -E "^$WORK/runs/" "$L" | tail -1)
  ep=$(grep -E '^epoch [0-9]+/[0-9]+ \|' "$L" | tail -1)
  st=$(status_of "$STEP_RC")
  [[ "$st" == PASS && -z "$ep" ]] && st=FAIL
  record "$st" quickstart_train "$STEP_SECS" "${ep:-$(tail -2 "$L" | tr '\n' ' ')}"
  [[ -n "$ep" ]] && FIGURES+=("quickstart on the GPU ($(sed -n 's/.*"n_train": *\([0-9]*\).*/\1/p' "$QS/parameters.json" | head -1) train images, 2 epochs): $ep")
  if [[ -n "$RUN" && -f "$RUN/checkpoint_best.safetensors" ]]; then
    if run_step quickstart_eval 60 0 env OMP_NUM_THREADS=$THREADS "$IPSNET" eval \
        --checkpoint "$RUN/checkpoint_best.safetensors" --data "$QS" --device cuda --quiet; then
      record "$(status_of "$STEP_RC")" quickstart_eval "$STEP_SECS" "$(grep -E 'split|mean metric' "$LOGS/quickstart_eval.log" | tr '\n' ' ' | tr -s ' ')"
    else
      record SKIP quickstart_eval 0 "no time left"
    fi
  else
    record FAIL quickstart_eval 0 "no checkpoint from the training run"
  fi
else
  record SKIP quickstart_train 0 "no time left"
fi

# ---- if time is left: the step as the reference runs it (every patch encoded) ---------------
if want ips_memory_no_shortcuts && (( $(left) > 70 )); then
  ips_memory_step ips_memory_no_shortcuts 90 5 "shortcuts off, every patch encoded as the reference" --shortcuts off
fi

# ---- if time is left: the step in bfloat16 (issue 17) -------------------------------------------
if want ips_memory_bf16 && (( $(left) > 60 )); then
  ips_memory_step ips_memory_bf16 90 5 "precision bf16, shortcuts on" --set precision=bf16
fi

if (( FAILED == 0 )); then
  finish 0 "overall: PASS ($(elapsed) s)"
fi
finish 1 "overall: FAIL ($FAILED failed, $(elapsed) s)"
