// Batch norm and pooling kernels (own kernels rather than cuDNN: the
// statistics, the running-stat update and the int64 argmax indices must match
// the CPU backend, whose bodies these kernels call: engine/math/norm.h and
// engine/math/conv.h).
// Per-channel sums run one block per channel and accumulate in double, as
// the CPU does. Accumulate rule: every output is written (=), including the
// parameter gradients; running statistics are updated in place.
#include "cuda/kernels/common.cuh"
#include "engine/math/conv.h"
#include "engine/math/norm.h"

namespace ipsnet {
namespace cuda {

namespace {

// x (N, C, S): per channel c, mean and biased var (two passes), save_mean/rstd (C),
// running stats updated, and the scale/shift ab (2, C) in double for the apply pass
__global__ void bn_stats_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                const float* __restrict__ beta, float* __restrict__ save_mean,
                                float* __restrict__ save_rstd, float* running_mean, float* running_var,
                                double* __restrict__ ab, int64_t n, int64_t c, int64_t s, double momentum,
                                double eps) {
  __shared__ double scratch[32];
  const int64_t ch = blockIdx.x;
  const int64_t m = n * s;
  double sum = 0.0;
  for (int64_t t = threadIdx.x; t < m; t += blockDim.x) sum += static_cast<double>(x[((t / s) * c + ch) * s + t % s]);
  const double mean = block_sum<double>(sum, scratch) / static_cast<double>(m);
  double sq = 0.0;
  for (int64_t t = threadIdx.x; t < m; t += blockDim.x) {
    const double d = static_cast<double>(x[((t / s) * c + ch) * s + t % s]) - mean;
    sq += d * d;
  }
  const double var = block_sum<double>(sq, scratch) / static_cast<double>(m);
  if (threadIdx.x == 0) {
    const double rstd = 1.0 / sqrt(var + eps);
    save_mean[ch] = static_cast<float>(mean);
    save_rstd[ch] = static_cast<float>(rstd);
    if (running_mean && running_var)
      math::batch_norm_update_running<float, double>(running_mean + ch, running_var + ch, mean, var, m, momentum);
    const double a = rstd * (gamma ? static_cast<double>(gamma[ch]) : 1.0);
    ab[ch] = a;
    ab[c + ch] = (beta ? static_cast<double>(beta[ch]) : 0.0) - mean * a;
  }
}

// ab (2, C) from given mean/var (C): a = gamma / sqrt(var + eps), b = beta - mean a
__global__ void bn_inference_coeffs_kernel(const float* __restrict__ gamma, const float* __restrict__ beta,
                                           const float* __restrict__ mean, const float* __restrict__ var,
                                           double* __restrict__ ab, int64_t c, double eps) {
  IPSNET_GRID_STRIDE(ch, c) {
    const double a = (gamma ? static_cast<double>(gamma[ch]) : 1.0) / sqrt(static_cast<double>(var[ch]) + eps);
    ab[ch] = a;
    ab[c + ch] = (beta ? static_cast<double>(beta[ch]) : 0.0) - static_cast<double>(mean[ch]) * a;
  }
}

// y (N, C, S) = x a[c] + b[c] (math::batch_norm_apply_channel per element)
__global__ void bn_apply_kernel(const float* __restrict__ x, float* __restrict__ y, const double* __restrict__ ab,
                                int64_t total, int64_t c, int64_t s) {
  IPSNET_GRID_STRIDE(i, total) {
    const int64_t ch = (i / s) % c;
    math::batch_norm_apply_channel<float>(x + i, y + i, 1, 1, 0, static_cast<float>(ab[ch]),
                                          static_cast<float>(ab[c + ch]));
  }
}

// per channel: sums (2, C) = (sum dy, rstd sum dy (x - mean)); dgamma = second, dbeta = first
__global__ void bn_backward_reduce_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                          const float* __restrict__ mean, const float* __restrict__ rstd,
                                          double* __restrict__ sums, float* __restrict__ dgamma,
                                          float* __restrict__ dbeta, int64_t n, int64_t c, int64_t s) {
  __shared__ double scratch[32];
  const int64_t ch = blockIdx.x;
  const int64_t m = n * s;
  const double mu = mean[ch];
  double a = 0.0, b = 0.0;
  for (int64_t t = threadIdx.x; t < m; t += blockDim.x) {
    const int64_t off = ((t / s) * c + ch) * s + t % s;
    const double g = dy[off];
    a += g;
    if (x) b += g * (static_cast<double>(x[off]) - mu);
  }
  a = block_sum<double>(a, scratch);
  b = block_sum<double>(b, scratch);
  if (threadIdx.x == 0) {
    const double sdx = b * static_cast<double>(rstd[ch]);
    sums[ch] = a;
    sums[c + ch] = sdx;
    if (dgamma) dgamma[ch] = static_cast<float>(sdx);
    if (dbeta) dbeta[ch] = static_cast<float>(a);
  }
}

// dx (N, C, S) per element: math::batch_norm_backward_channel with the channel's sums
__global__ void bn_backward_dx_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                      const float* __restrict__ dy, const float* __restrict__ mean,
                                      const float* __restrict__ rstd, const double* __restrict__ sums,
                                      float* __restrict__ dx, int64_t total, int64_t c, int64_t s, double m,
                                      bool stats_are_constant) {
  IPSNET_GRID_STRIDE(i, total) {
    const int64_t ch = (i / s) % c;
    math::batch_norm_backward_channel<float, double>(
        x ? x + i : nullptr, dy + i, dx + i, 1, 1, 0, static_cast<double>(mean[ch]), static_cast<double>(rstd[ch]),
        gamma ? static_cast<double>(gamma[ch]) : 1.0, sums ? sums[ch] / m : 0.0, sums ? sums[c + ch] / m : 0.0,
        stats_are_constant);
  }
}

// y, indices (planes, ho, wo) = max over each window of x (planes, h, w) (math::max_pool_window)
__global__ void max_pool_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t* __restrict__ idx,
                                        int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t kh,
                                        int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw) {
  const int64_t total = planes * ho * wo;
  IPSNET_GRID_STRIDE(o, total) {
    const int64_t ow = o % wo, oh = (o / wo) % ho, p = o / (ho * wo);
    int64_t arg;
    y[o] = math::max_pool_window<float>(x + p * h * w, h, w, oh, ow, kh, kw, sh, sw, ph, pw, &arg);
    if (idx) idx[o] = arg;
  }
}

// dx (planes, h * w) += dy at the saved argmax (dx zeroed before)
__global__ void max_pool_backward_kernel(const float* __restrict__ dy, const int64_t* __restrict__ idx,
                                         float* dx, int64_t planes, int64_t in_plane, int64_t out_plane) {
  const int64_t total = planes * out_plane;
  IPSNET_GRID_STRIDE(o, total) {
    const int64_t a = idx[o];
    if (a >= 0) atomicAdd(dx + (o / out_plane) * in_plane + a, dy[o]);
  }
}

// dx (planes, hw) = dy[p] / hw
__global__ void avg_pool_global_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx, int64_t planes,
                                                int64_t hw) {
  const int64_t total = planes * hw;
  IPSNET_GRID_STRIDE(i, total) dx[i] = dy[i / hw] / static_cast<float>(hw);
}

unsigned channel_grid(int64_t c) { return static_cast<unsigned>(c); }

}  // namespace

void batch_norm_training_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_rstd, float* running_mean, float* running_var, int64_t n,
                              int64_t c, int64_t s, double momentum, double eps) {
  if (c == 0 || n * s == 0) return;
  ScopedDeviceBuffer ab(*ctx.allocator, static_cast<size_t>(2 * c) * sizeof(double));
  double* abp = static_cast<double*>(ab.data());
  bn_stats_kernel<<<channel_grid(c), kThreads, 0, ctx.stream>>>(x, gamma, beta, save_mean, save_rstd, running_mean,
                                                                running_var, abp, n, c, s, momentum, eps);
  IPSNET_LAUNCH_CHECK("bn_stats_kernel");
  const int64_t total = n * c * s;
  bn_apply_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(x, y, abp, total, c, s);
  IPSNET_LAUNCH_CHECK("bn_apply_kernel");
}

void batch_norm_inference_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* beta,
                               const float* mean, const float* var, float* y, int64_t n, int64_t c, int64_t s,
                               double eps) {
  if (c == 0 || n * s == 0) return;
  ScopedDeviceBuffer ab(*ctx.allocator, static_cast<size_t>(2 * c) * sizeof(double));
  double* abp = static_cast<double*>(ab.data());
  bn_inference_coeffs_kernel<<<grid_for(ctx, c, kThreads), kThreads, 0, ctx.stream>>>(gamma, beta, mean, var, abp, c,
                                                                                     eps);
  IPSNET_LAUNCH_CHECK("bn_inference_coeffs_kernel");
  const int64_t total = n * c * s;
  bn_apply_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(x, y, abp, total, c, s);
  IPSNET_LAUNCH_CHECK("bn_apply_kernel");
}

void batch_norm_backward_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* dy,
                              const float* save_mean, const float* save_rstd, float* dx, float* dgamma, float* dbeta,
                              int64_t n, int64_t c, int64_t s, bool stats_are_constant) {
  if (c == 0) return;
  const int64_t m = n * s;
  const bool need_sums = dgamma || dbeta || (dx && !stats_are_constant);
  ScopedDeviceBuffer sums;
  if (need_sums && m > 0) {
    sums = ScopedDeviceBuffer(*ctx.allocator, static_cast<size_t>(2 * c) * sizeof(double));
    const float* xr = (dgamma || !stats_are_constant) ? x : nullptr;
    bn_backward_reduce_kernel<<<channel_grid(c), kThreads, 0, ctx.stream>>>(
        xr, dy, save_mean, save_rstd, static_cast<double*>(sums.data()), dgamma, dbeta, n, c, s);
    IPSNET_LAUNCH_CHECK("bn_backward_reduce_kernel");
  } else if (m == 0) {
    if (dgamma) IPSNET_CUDA_CHECK(cudaMemsetAsync(dgamma, 0, static_cast<size_t>(c) * sizeof(float), ctx.stream));
    if (dbeta) IPSNET_CUDA_CHECK(cudaMemsetAsync(dbeta, 0, static_cast<size_t>(c) * sizeof(float), ctx.stream));
  }
  if (!dx || m == 0) return;
  const int64_t total = n * c * s;
  bn_backward_dx_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
      x, gamma, dy, save_mean, save_rstd, static_cast<const double*>(sums.data()), dx, total, c, s,
      static_cast<double>(m), stats_are_constant);
  IPSNET_LAUNCH_CHECK("bn_backward_dx_kernel");
}

void max_pool2d_forward_cuda(CudaContext& ctx, const float* x, float* y, int64_t* indices, const Pool2dGeometry& g) {
  const int64_t total = g.n * g.c * g.ho * g.wo;
  if (total == 0) return;
  max_pool_forward_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
      x, y, indices, g.n * g.c, g.h, g.w, g.ho, g.wo, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw);
  IPSNET_LAUNCH_CHECK("max_pool_forward_kernel");
}

void max_pool2d_backward_cuda(CudaContext& ctx, const float* dy, const int64_t* indices, float* dx,
                              const Pool2dGeometry& g) {
  const int64_t planes = g.n * g.c, in_plane = g.h * g.w, out_plane = g.ho * g.wo;
  if (planes * in_plane == 0) return;
  IPSNET_CUDA_CHECK(cudaMemsetAsync(dx, 0, static_cast<size_t>(planes * in_plane) * sizeof(float), ctx.stream));
  if (out_plane == 0) return;
  max_pool_backward_kernel<<<grid_for(ctx, planes * out_plane, kThreads), kThreads, 0, ctx.stream>>>(
      dy, indices, dx, planes, in_plane, out_plane);
  IPSNET_LAUNCH_CHECK("max_pool_backward_kernel");
}

void avg_pool2d_global_backward_cuda(CudaContext& ctx, const float* dy, float* dx, int64_t planes, int64_t hw) {
  if (planes * hw == 0) return;
  avg_pool_global_backward_kernel<<<grid_for(ctx, planes * hw, kThreads), kThreads, 0, ctx.stream>>>(dy, dx, planes,
                                                                                                   hw);
  IPSNET_LAUNCH_CHECK("avg_pool_global_backward_kernel");
}

}  // namespace cuda
}  // namespace ipsnet
