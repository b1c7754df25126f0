// Batch norm and pooling kernels (own kernels rather than cuDNN: the
// statistics, the running-stat update and the int64 argmax indices must match
// the CPU backend, whose bodies these kernels call: engine/math/norm.h and
// engine/math/conv.h).
// Per-channel sums accumulate in double, as the CPU's reference does, over a
// grid of (channel, split) blocks: each channel's N planes are split into
// ranges so that the device is full even with few channels, and a small
// kernel combines a channel's partial sums in a fixed order. The statistics
// take two passes (the mean, then the squares about it), as the CPU's. No
// element pays a 64-bit division: the reductions step through (plane,
// position) incrementally, and the per-element kernels divide by
// precomputed multipliers (FastDiv) when the tensor has fewer than 2^31
// elements. Accumulate rule: every output is written (=), including the
// parameter gradients; running statistics are updated in place.
#include "cuda/kernels/common.cuh"
#include "cuda/kernels/fast_div.h"
#include "engine/math/conv.h"
#include "engine/math/norm.h"

namespace ipsnet {
namespace cuda {

namespace {

// ---- per-channel partial sums -------------------------------------------------------
// x (N, C, S): block (ch, p) sums NOUT contributions of the elements of
// channel ch in planes [p * planes_per_split, ...) into partial (P, NOUT, C).
// Load(off, ch, v) adds the contributions of the element at offset off to v.
template <int NOUT, typename Load>
__global__ void bn_partial_kernel(Load load, int64_t n, int64_t c, int64_t s, int64_t planes_per_split,
                                  double* __restrict__ partial) {
  __shared__ double scratch[32];
  const int64_t ch = blockIdx.x, p = blockIdx.y;
  const int64_t n0 = p * planes_per_split;
  const int64_t n1 = n0 + planes_per_split < n ? n0 + planes_per_split : n;
  double acc[NOUT];
#pragma unroll
  for (int k = 0; k < NOUT; ++k) acc[k] = 0.0;
  const int64_t count = (n1 - n0) * s;
  // (plane, position) of element t of the range, advanced without dividing.
  int64_t t = threadIdx.x;
  int64_t plane = n0 + t / s, pos = t % s;
  const int64_t step_planes = blockDim.x / s, step_pos = blockDim.x % s;
  for (; t < count; t += blockDim.x) {
    load((plane * c + ch) * s + pos, ch, acc);
    pos += step_pos;
    plane += step_planes;
    if (pos >= s) {
      pos -= s;
      ++plane;
    }
  }
#pragma unroll
  for (int k = 0; k < NOUT; ++k) {
    const double r = block_sum<double>(acc[k], scratch);
    if (threadIdx.x == 0) partial[(p * NOUT + k) * c + ch] = r;
  }
}

struct BnSumLoad {  // sum x
  const float* x;
  __device__ void operator()(int64_t off, int64_t, double* v) const { v[0] += static_cast<double>(x[off]); }
};
struct BnSquareLoad {  // sum (x - mean)^2
  const float* x;
  const double* mean;  // (C)
  __device__ void operator()(int64_t off, int64_t ch, double* v) const {
    const double d = static_cast<double>(x[off]) - mean[ch];
    v[0] += d * d;
  }
};
struct BnBackwardLoad {  // sum dy, sum dy (x - mean) (x null: the second is 0)
  const float* x;
  const float* dy;
  const float* mean;  // (C)
  __device__ void operator()(int64_t off, int64_t ch, double* v) const {
    const double g = dy[off];
    v[0] += g;
    if (x) v[1] += g * (static_cast<double>(x[off]) - static_cast<double>(mean[ch]));
  }
};

/// sum over the P splits of partial (P, NOUT, C), output k, channel ch (in split order)
__device__ __forceinline__ double bn_combine(const double* partial, int64_t splits, int nout, int k, int64_t c,
                                             int64_t ch) {
  double s = 0.0;
  for (int64_t p = 0; p < splits; ++p) s += partial[(p * nout + k) * c + ch];
  return s;
}

// mean (C) = sum x / m from the partial sums
__global__ void bn_mean_kernel(const double* __restrict__ psum, int64_t splits, int64_t c, double m,
                               double* __restrict__ mean) {
  IPSNET_GRID_STRIDE(ch, c) mean[ch] = bn_combine(psum, splits, 1, 0, c, ch) / m;
}

// per channel: var = sum (x - mean)^2 / m; save_mean/rstd (C), running stats
// updated, and the scale/shift ab (2, C) in double for the apply pass
__global__ void bn_stats_finalize_kernel(const double* __restrict__ mean, const double* __restrict__ psq,
                                         int64_t splits, const float* __restrict__ gamma,
                                         const float* __restrict__ beta, float* __restrict__ save_mean,
                                         float* __restrict__ save_rstd, float* running_mean, float* running_var,
                                         double* __restrict__ ab, int64_t c, int64_t m, double momentum, double eps) {
  IPSNET_GRID_STRIDE(ch, c) {
    const double mu = mean[ch];
    const double var = bn_combine(psq, splits, 1, 0, c, ch) / static_cast<double>(m);
    const double rstd = 1.0 / sqrt(var + eps);
    save_mean[ch] = static_cast<float>(mu);
    save_rstd[ch] = static_cast<float>(rstd);
    if (running_mean && running_var)
      math::batch_norm_update_running<float, double>(running_mean + ch, running_var + ch, mu, var, m, momentum);
    const double a = rstd * (gamma ? static_cast<double>(gamma[ch]) : 1.0);
    ab[ch] = a;
    ab[c + ch] = (beta ? static_cast<double>(beta[ch]) : 0.0) - mu * a;
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

// ---- channel of an element ---------------------------------------------------------------
/// Channel of element i of (N, C, S): (i / S) % C, with 32-bit FastDiv when
/// the tensor is small enough (Small), else 64-bit division.
template <bool Small>
struct ChannelOf {
  FastDiv by_s, by_c;
  int64_t s = 1, c = 1;
  __device__ __forceinline__ int64_t operator()(int64_t i) const {
    if (Small) {
      const uint32_t q = by_s.div(static_cast<uint32_t>(i));
      return static_cast<int64_t>(q - by_c.div(q) * static_cast<uint32_t>(c));
    }
    return (i / s) % c;
  }
};

template <bool Small>
ChannelOf<Small> channel_of(int64_t c, int64_t s) {
  ChannelOf<Small> f;
  f.s = s;
  f.c = c;
  if (Small) {
    f.by_s = FastDiv(static_cast<uint32_t>(s));
    f.by_c = FastDiv(static_cast<uint32_t>(c));
  }
  return f;
}

// y (N, C, S) = x a[c] + b[c] (math::batch_norm_apply_channel per element)
template <bool Small>
__global__ void bn_apply_kernel(const float* __restrict__ x, float* __restrict__ y, const double* __restrict__ ab,
                                int64_t total, int64_t c, ChannelOf<Small> channel) {
  IPSNET_GRID_STRIDE(i, total) {
    const int64_t ch = channel(i);
    math::batch_norm_apply_channel<float>(x + i, y + i, 1, 1, 0, static_cast<float>(ab[ch]),
                                          static_cast<float>(ab[c + ch]));
  }
}

// per channel: sums (2, C) = (sum dy, rstd sum dy (x - mean)); dgamma = second, dbeta = first
__global__ void bn_backward_finalize_kernel(const double* __restrict__ partial, int64_t splits,
                                            const float* __restrict__ rstd, double* __restrict__ sums,
                                            float* __restrict__ dgamma, float* __restrict__ dbeta, int64_t c) {
  IPSNET_GRID_STRIDE(ch, c) {
    const double a = bn_combine(partial, splits, 2, 0, c, ch);
    const double sdx = bn_combine(partial, splits, 2, 1, c, ch) * static_cast<double>(rstd[ch]);
    sums[ch] = a;
    sums[c + ch] = sdx;
    if (dgamma) dgamma[ch] = static_cast<float>(sdx);
    if (dbeta) dbeta[ch] = static_cast<float>(a);
  }
}

// dx (N, C, S) per element: math::batch_norm_backward_channel with the channel's sums
template <bool Small>
__global__ void bn_backward_dx_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                      const float* __restrict__ dy, const float* __restrict__ mean,
                                      const float* __restrict__ rstd, const double* __restrict__ sums,
                                      float* __restrict__ dx, int64_t total, int64_t c, double m,
                                      bool stats_are_constant, ChannelOf<Small> channel) {
  IPSNET_GRID_STRIDE(i, total) {
    const int64_t ch = channel(i);
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

/// Planes per split for the per-channel reductions: enough (channel, split)
/// blocks to fill the device a few times, each with at least 4096 elements.
int64_t bn_planes_per_split(const CudaContext& ctx, int64_t n, int64_t c, int64_t s) {
  const int64_t target = static_cast<int64_t>(ctx.sm_count) * 4;
  int64_t splits = (target + c - 1) / c;
  const int64_t by_size = (n * s) / 4096;  // splits that keep 4096 elements each
  if (splits > by_size) splits = by_size;
  if (splits > n) splits = n;
  if (splits > 65535) splits = 65535;
  if (splits < 1) splits = 1;
  return (n + splits - 1) / splits;
}

/// Runs `f(channel_of<Small>(c, s))` with Small when total < 2^31.
template <typename F>
void with_channel_of(int64_t total, int64_t c, int64_t s, F&& f) {
  if (total < (int64_t(1) << 31)) f(channel_of<true>(c, s));
  else f(channel_of<false>(c, s));
}

}  // namespace

void batch_norm_training_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_rstd, float* running_mean, float* running_var, int64_t n,
                              int64_t c, int64_t s, double momentum, double eps) {
  if (c == 0 || n * s == 0) return;
  IPSNET_CHECK(c <= 0x7fffffff, "batch_norm: ", c, " channels are too many for one grid");
  const int64_t per = bn_planes_per_split(ctx, n, c, s), splits = (n + per - 1) / per;
  // Scratch (doubles): partial sums (P, C), means (C), partial squares (P, C), ab (2, C).
  ScopedDeviceBuffer scratch(*ctx.allocator, static_cast<size_t>((2 * splits + 3) * c) * sizeof(double));
  double* psum = static_cast<double*>(scratch.data());
  double* mean = psum + splits * c;
  double* psq = mean + c;
  double* abp = psq + splits * c;
  const dim3 grid(static_cast<unsigned>(c), static_cast<unsigned>(splits));
  bn_partial_kernel<1><<<grid, kThreads, 0, ctx.stream>>>(BnSumLoad{x}, n, c, s, per, psum);
  IPSNET_LAUNCH_CHECK("bn_partial_kernel (sum)");
  const double m = static_cast<double>(n * s);
  bn_mean_kernel<<<grid_for(ctx, c, kThreads), kThreads, 0, ctx.stream>>>(psum, splits, c, m, mean);
  IPSNET_LAUNCH_CHECK("bn_mean_kernel");
  bn_partial_kernel<1><<<grid, kThreads, 0, ctx.stream>>>(BnSquareLoad{x, mean}, n, c, s, per, psq);
  IPSNET_LAUNCH_CHECK("bn_partial_kernel (squares)");
  bn_stats_finalize_kernel<<<grid_for(ctx, c, kThreads), kThreads, 0, ctx.stream>>>(
      mean, psq, splits, gamma, beta, save_mean, save_rstd, running_mean, running_var, abp, c, n * s, momentum, eps);
  IPSNET_LAUNCH_CHECK("bn_stats_finalize_kernel");
  const int64_t total = n * c * s;
  with_channel_of(total, c, s, [&](auto channel) {
    bn_apply_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(x, y, abp, total, c, channel);
    IPSNET_LAUNCH_CHECK("bn_apply_kernel");
  });
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
  with_channel_of(total, c, s, [&](auto channel) {
    bn_apply_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(x, y, abp, total, c, channel);
    IPSNET_LAUNCH_CHECK("bn_apply_kernel");
  });
}

void batch_norm_backward_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* dy,
                              const float* save_mean, const float* save_rstd, float* dx, float* dgamma, float* dbeta,
                              int64_t n, int64_t c, int64_t s, bool stats_are_constant) {
  if (c == 0) return;
  IPSNET_CHECK(c <= 0x7fffffff, "batch_norm_backward: ", c, " channels are too many for one grid");
  const int64_t m = n * s;
  const bool need_sums = dgamma || dbeta || (dx && !stats_are_constant);
  ScopedDeviceBuffer scratch;
  double* sums = nullptr;
  if (need_sums && m > 0) {
    const int64_t per = bn_planes_per_split(ctx, n, c, s), splits = (n + per - 1) / per;
    // Scratch (doubles): partial sums (P, 2, C), then the sums (2, C).
    scratch = ScopedDeviceBuffer(*ctx.allocator, static_cast<size_t>((2 * splits + 2) * c) * sizeof(double));
    double* partial = static_cast<double*>(scratch.data());
    sums = partial + 2 * splits * c;
    const float* xr = (dgamma || !stats_are_constant) ? x : nullptr;
    const dim3 grid(static_cast<unsigned>(c), static_cast<unsigned>(splits));
    bn_partial_kernel<2><<<grid, kThreads, 0, ctx.stream>>>(BnBackwardLoad{xr, dy, save_mean}, n, c, s, per,
                                                             partial);
    IPSNET_LAUNCH_CHECK("bn_partial_kernel (backward)");
    bn_backward_finalize_kernel<<<grid_for(ctx, c, kThreads), kThreads, 0, ctx.stream>>>(partial, splits, save_rstd,
                                                                                       sums, dgamma, dbeta, c);
    IPSNET_LAUNCH_CHECK("bn_backward_finalize_kernel");
  } else if (m == 0) {
    if (dgamma) IPSNET_CUDA_CHECK(cudaMemsetAsync(dgamma, 0, static_cast<size_t>(c) * sizeof(float), ctx.stream));
    if (dbeta) IPSNET_CUDA_CHECK(cudaMemsetAsync(dbeta, 0, static_cast<size_t>(c) * sizeof(float), ctx.stream));
  }
  if (!dx || m == 0) return;
  const int64_t total = n * c * s;
  with_channel_of(total, c, s, [&](auto channel) {
    bn_backward_dx_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
        x, gamma, dy, save_mean, save_rstd, sums, dx, total, c, static_cast<double>(m), stats_are_constant, channel);
    IPSNET_LAUNCH_CHECK("bn_backward_dx_kernel");
  });
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
