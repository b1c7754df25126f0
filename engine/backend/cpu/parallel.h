// Threaded loops for the CPU backend (OpenMP; one global thread count).
#pragma once
#include <cstdint>

#include <omp.h>

namespace ipsnet {
namespace cpu {

/// Work below this many elements runs on one thread.
constexpr int64_t kGrain = 32768;

/// Calls f(begin, end) over [0, n) split into contiguous chunks, one per thread.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  int max_threads = omp_get_max_threads();
  if (n < grain || max_threads <= 1 || omp_in_parallel()) {
    f(int64_t(0), n);
    return;
  }
  int64_t chunks = std::min<int64_t>(max_threads, (n + grain - 1) / grain);
  if (chunks < 2) chunks = 2;
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    if (b < e) f(b, e);
  }
}

}  // namespace cpu
}  // namespace ipsnet
