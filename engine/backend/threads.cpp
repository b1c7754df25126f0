#include <omp.h>

#include <cstdlib>
#include <string>

#include "engine/backend/backend.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace ipsnet {

namespace {
int initial_threads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (env && *env) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return omp_get_num_procs();
}
int g_threads = 0;
}  // namespace

void set_num_threads(int n) {
  IPSNET_CHECK(n >= 1, "set_num_threads: expected a thread count >= 1, got ", n);
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(initial_threads());
  return g_threads;
}

}  // namespace ipsnet
