// Batch-norm bodies shared by the CPU reference loops and CUDA kernels.
// One channel per call: x viewed as (N, C, S), the channel's elements are
// N runs of S contiguous values, run i at x[i * stride] (stride = C * S).
// Sums accumulate in Acc (double on the CPU reference) for 1e6-element
// channels in float32.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace math {

// mean = sum x / m, var = sum (x - mean)^2 / m (biased), m = n * s; two passes.
template <typename T, typename Acc>
IPSNET_HD void batch_norm_channel_stats(const T* x, int64_t n, int64_t s, int64_t stride,
                                        Acc* mean_out, Acc* var_out) {
  Acc sum = Acc(0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s; ++j) sum += Acc(x[i * stride + j]);
  const Acc m = Acc(n * s);
  const Acc mean = sum / m;
  Acc sq = Acc(0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s; ++j) {
      const Acc d = Acc(x[i * stride + j]) - mean;
      sq += d * d;
    }
  *mean_out = mean;
  *var_out = sq / m;
}

// PyTorch's running-stat update (momentum = weight of the new value):
//   running_mean = (1 - momentum) running_mean + momentum mean
//   running_var  = (1 - momentum) running_var + momentum var * m / (m - 1)
// (unbiased variance; m = 1 uses the biased one, which is 0).
template <typename T, typename Acc>
IPSNET_HD void batch_norm_update_running(T* running_mean, T* running_var, Acc mean, Acc var,
                                         int64_t m, Acc momentum) {
  const Acc unbiased = m > 1 ? var * Acc(m) / Acc(m - 1) : var;
  *running_mean = T((Acc(1) - momentum) * Acc(*running_mean) + momentum * mean);
  *running_var = T((Acc(1) - momentum) * Acc(*running_var) + momentum * unbiased);
}

// y = (x - mean) * rstd * gamma + beta over one channel, as scale/shift:
// y = x * a + b with a = rstd gamma, b = beta - mean a.
template <typename T>
IPSNET_HD void batch_norm_apply_channel(const T* x, T* y, int64_t n, int64_t s, int64_t stride,
                                        T a, T b) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s; ++j) y[i * stride + j] = x[i * stride + j] * a + b;
}

// Per channel reductions for backward: sum_dy = sum dy, sum_dy_xh = sum dy xh
// with xh = (x - mean) rstd. x may be null (then sum_dy_xh is 0).
template <typename T, typename Acc>
IPSNET_HD void batch_norm_backward_reduce(const T* x, const T* dy, int64_t n, int64_t s,
                                          int64_t stride, Acc mean, Acc rstd, Acc* sum_dy,
                                          Acc* sum_dy_xh) {
  Acc a = Acc(0), b = Acc(0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s; ++j) {
      const Acc g = Acc(dy[i * stride + j]);
      a += g;
      if (x) b += g * (Acc(x[i * stride + j]) - mean);
    }
  *sum_dy = a;
  *sum_dy_xh = b * rstd;
}

// dx over one channel (or any run of it). With k = gamma rstd, m = N * S and
// the channel's means mean_dy = sum_dy / m, mean_dy_xh = sum_dy_xh / m:
//   batch stats:    dx = k (dy - mean_dy - xh mean_dy_xh)
//   constant stats: dx = k dy   (x unused, may be null)
template <typename T, typename Acc>
IPSNET_HD void batch_norm_backward_channel(const T* x, const T* dy, T* dx, int64_t n, int64_t s,
                                           int64_t stride, Acc mean, Acc rstd, Acc gamma,
                                           Acc mean_dy, Acc mean_dy_xh, bool stats_are_constant) {
  const Acc k = gamma * rstd;
  if (stats_are_constant) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) dx[i * stride + j] = T(k * Acc(dy[i * stride + j]));
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < s; ++j) {
      const Acc xh = (Acc(x[i * stride + j]) - mean) * rstd;
      dx[i * stride + j] = T(k * (Acc(dy[i * stride + j]) - mean_dy - xh * mean_dy_xh));
    }
}

}  // namespace math
}  // namespace ipsnet
