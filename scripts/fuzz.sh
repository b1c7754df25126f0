#!/usr/bin/env bash
# libFuzzer on every reader (issue 19): builds fuzz/fuzz_{npy,safetensors,config,dataset}
# with Debian's clang, AddressSanitizer and UndefinedBehaviorSanitizer into
# build-fuzz/ (IPSNET_FUZZ_BUILD_DIR), then runs each from the committed seed
# corpus fuzz/corpus/<reader>/ for FUZZ_SECONDS (default 60) seconds. Prints one
# line per harness with its executions per second and total executions; exits 1
# when a harness crashes (the reproducer lands in build-fuzz/artifacts/).
#   scripts/fuzz.sh                 # all four, 60 s each
#   FUZZ_SECONDS=10 scripts/fuzz.sh config npy
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${IPSNET_FUZZ_BUILD_DIR:-build-fuzz}
SECS=${FUZZ_SECONDS:-60}
HARNESSES=("$@")
[ ${#HARNESSES[@]} -gt 0 ] || HARNESSES=(npy safetensors config dataset)
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang)"; exit 2; }
LAUNCHER=()
command -v ccache >/dev/null && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# fuzz/ is configured on its own: each harness is compiled, sanitized, from only
# the sources its reader needs (fuzz/CMakeLists.txt), not the whole project.
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$PWD/fuzz\$" "$BUILD/CMakeCache.txt"; then
  echo "fuzz: $BUILD was configured from another source tree (the whole project before fuzz/ stood alone); expected $PWD/fuzz: remove $BUILD and rerun"
  exit 2
fi
CC=clang CXX=clang++ cmake -G Ninja -S fuzz -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${LAUNCHER[@]}" >/dev/null
ninja -C "$BUILD" -j"${JOBS:-2}" $(printf 'fuzz_%s ' "${HARNESSES[@]}")
mkdir -p "$BUILD/artifacts"
status=0
for h in "${HARNESSES[@]}"; do
  work="$BUILD/corpus-$h"  # new inputs go here; the committed seeds stay as they are
  mkdir -p "$work"
  log="$BUILD/fuzz_$h.log"
  # ASan's leak check is on; yaml-cpp and libgomp keep a few static allocations, which are not leaks of ours.
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$BUILD/fuzz_$h" -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$BUILD/artifacts/$h-" "$work" "fuzz/corpus/$h" >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  echo "fuzz_$h: $result, ${execs:-?} executions in ${SECS} s (${rate:-?} exec/s), corpus $(ls "$work" | wc -l) + $(ls "fuzz/corpus/$h" | wc -l) seeds; log $log"
  [ "$result" = ok ] || tail -40 "$log"
done
exit $status
