// Row bodies shared by CPU loops and CUDA kernels (one row per call; the CUDA
// side also has block-parallel versions built on the same formulas).
// A "row" is n elements at x[i * stride], i = 0..n-1.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace math {

// y_i = exp(x_i - max x) / sum_j exp(x_j - max x)
// log_softmax: y_i = x_i - max x - log sum_j exp(x_j - max x)
template <typename T>
IPSNET_HD void softmax_row(const T* x, T* y, int64_t n, int64_t stride, bool log_out) {
  T mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = x[i * stride] > mx ? x[i * stride] : mx;
  T sum = T(0);
  for (int64_t i = 0; i < n; ++i) sum += exp(x[i * stride] - mx);
  if (log_out) {
    T lse = log(sum);
    for (int64_t i = 0; i < n; ++i) y[i * stride] = x[i * stride] - mx - lse;
  } else {
    T inv = T(1) / sum;
    for (int64_t i = 0; i < n; ++i) y[i * stride] = exp(x[i * stride] - mx) * inv;
  }
}

// softmax:     dx_i = y_i (dy_i - sum_j dy_j y_j)
// log_softmax: dx_i = dy_i - exp(y_i) sum_j dy_j
template <typename T>
IPSNET_HD void softmax_backward_row(const T* y, const T* dy, T* dx, int64_t n, int64_t stride,
                                    bool log_out) {
  T s = T(0);
  if (log_out) {
    for (int64_t i = 0; i < n; ++i) s += dy[i * stride];
    for (int64_t i = 0; i < n; ++i) dx[i * stride] = dy[i * stride] - exp(y[i * stride]) * s;
  } else {
    for (int64_t i = 0; i < n; ++i) s += dy[i * stride] * y[i * stride];
    for (int64_t i = 0; i < n; ++i) dx[i * stride] = y[i * stride] * (dy[i * stride] - s);
  }
}

// Layer norm over a contiguous row of n:
//   mu = mean x, rstd = 1/sqrt(var x + eps) (biased var), xh = (x - mu) rstd,
//   y = xh * gamma + beta   (gamma/beta may be null: no affine)
template <typename T>
IPSNET_HD void layer_norm_row(const T* x, const T* gamma, const T* beta, T* y, int64_t n, T eps,
                              T* mean_out, T* rstd_out) {
  T mu = T(0);
  for (int64_t i = 0; i < n; ++i) mu += x[i];
  mu /= T(n);
  T var = T(0);
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mu) * (x[i] - mu);
  var /= T(n);
  T rstd = T(1) / sqrt(var + eps);
  for (int64_t i = 0; i < n; ++i) {
    T xh = (x[i] - mu) * rstd;
    y[i] = gamma ? xh * gamma[i] + (beta ? beta[i] : T(0)) : xh;
  }
  *mean_out = mu;
  *rstd_out = rstd;
}

// With g_i = dy_i * gamma_i (or dy_i):
//   dx_i = rstd (g_i - mean(g) - xh_i mean(g xh))
// dgamma_i += dy_i xh_i and dbeta_i += dy_i are accumulated by the caller
// (across rows) with layer_norm_param_grad_row.
template <typename T>
IPSNET_HD void layer_norm_backward_row(const T* x, const T* gamma, const T* dy, T* dx, int64_t n,
                                       T mu, T rstd) {
  T mg = T(0), mgx = T(0);
  for (int64_t i = 0; i < n; ++i) {
    T g = gamma ? dy[i] * gamma[i] : dy[i];
    T xh = (x[i] - mu) * rstd;
    mg += g;
    mgx += g * xh;
  }
  mg /= T(n);
  mgx /= T(n);
  for (int64_t i = 0; i < n; ++i) {
    T g = gamma ? dy[i] * gamma[i] : dy[i];
    T xh = (x[i] - mu) * rstd;
    dx[i] = rstd * (g - mg - xh * mgx);
  }
}

// AdamW (decoupled weight decay, as torch.optim.AdamW), element i at step t>=1:
//   p -= lr wd p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
template <typename T>
IPSNET_HD void adamw_element(T* p, const T* g, T* m, T* v, T lr, T b1, T b2, T eps, T wd,
                             T bias_c1, T bias_c2) {
  T gi = *g;
  *p -= lr * wd * *p;
  *m = b1 * *m + (T(1) - b1) * gi;
  *v = b2 * *v + (T(1) - b2) * gi * gi;
  T mhat = *m / bias_c1;
  T vhat = *v / bias_c2;
  *p -= lr * mhat / (sqrt(vhat) + eps);
}

// Inverted dropout mask: keep with probability 1-p, scaled by 1/(1-p).
template <typename T>
IPSNET_HD T dropout_mask_value(float u, T p) {
  return u >= static_cast<float>(p) ? T(1) / (T(1) - p) : T(0);
}

}  // namespace math
}  // namespace ipsnet
