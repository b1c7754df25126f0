// Reductions, softmax and layer norm.
//
// Rows that are contiguous (inner == 1) get one block per row with the
// block-parallel form of the formulas in engine/math/rows.h; strided rows
// (inner > 1) get one thread per row calling the row bodies of rows.h
// themselves, with reads coalesced across the inner axis.
// Semantics follow the CPU backend exactly: float sums accumulate in double,
// Max/Min ties go to the lower index, and on contiguous rows NaN wins (the
// first NaN), while strided columns compare plainly as the CPU loop does.
// Accumulate rule: every output is written (=); layer-norm parameter
// gradients are written too (the autograd node accumulates).
#include <cfloat>

#include "cuda/kernels/common.cuh"
#include "engine/math/rows.h"

namespace ipsnet {
namespace cuda {

namespace {

template <typename T> struct AccOf { using type = double; };
template <> struct AccOf<int64_t> { using type = int64_t; };

/// Whether (v, i) beats (best, bi) on a contiguous row: NaN first, then the
/// larger (smaller) value, then the lower index. bi < 0 marks "nothing yet".
template <typename T>
__device__ __forceinline__ bool arg_better(T v, int64_t i, T best, int64_t bi, bool is_max) {
  if (bi < 0) return true;
  if (i < 0) return false;
  const bool vn = v != v, bn = best != best;
  if (vn || bn) {
    if (vn && bn) return i < bi;
    return vn;
  }
  if (v != best) return is_max ? v > best : v < best;
  return i < bi;
}

// x (outer, n) -> out (outer), argidx (outer); one block per row
template <typename T>
__global__ void reduce_rows_kernel(const T* __restrict__ x, int64_t outer, int64_t n, T* __restrict__ out,
                                   int64_t* __restrict__ argidx, int op) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc s_acc[32];
  __shared__ T s_val[32];
  __shared__ int64_t s_idx[32];
  const bool is_max = op == static_cast<int>(ReduceOp::Max);
  const bool is_arg = is_max || op == static_cast<int>(ReduceOp::Min);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < outer; r += gridDim.x) {
    const T* row = x + r * n;
    if (!is_arg) {
      Acc s = 0;
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += static_cast<Acc>(row[j]);
      s = block_sum<Acc>(s, s_acc);
      if (threadIdx.x == 0)
        out[r] = static_cast<T>(op == static_cast<int>(ReduceOp::Mean) ? s / static_cast<Acc>(n) : s);
      continue;
    }
    T best = T(0);
    int64_t bi = -1;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      if (arg_better(row[j], j, best, bi, is_max)) { best = row[j]; bi = j; }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      T ov = __shfl_xor_sync(0xffffffffu, best, o);
      int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (arg_better(ov, oi, best, bi, is_max)) { best = ov; bi = oi; }
    }
    if (lane == 0) { s_val[warp] = best; s_idx[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
      best = lane < nwarps ? s_val[lane] : T(0);
      bi = lane < nwarps ? s_idx[lane] : -1;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        T ov = __shfl_xor_sync(0xffffffffu, best, o);
        int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (arg_better(ov, oi, best, bi, is_max)) { best = ov; bi = oi; }
      }
      if (lane == 0) {
        out[r] = best;
        if (argidx) argidx[r] = bi;
      }
    }
    __syncthreads();
  }
}

// x (outer, n, inner) -> out (outer, inner); one thread per column, the CPU's column loop
template <typename T>
__global__ void reduce_columns_kernel(const T* __restrict__ x, int64_t outer, int64_t n, int64_t inner,
                                      T* __restrict__ out, int64_t* __restrict__ argidx, int op) {
  using Acc = typename AccOf<T>::type;
  const bool is_max = op == static_cast<int>(ReduceOp::Max);
  const bool is_arg = is_max || op == static_cast<int>(ReduceOp::Min);
  const int64_t total = outer * inner;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t o = t / inner, i = t % inner;
    const T* base = x + o * n * inner + i;
    if (is_arg) {
      T best = base[0];
      int64_t bi = 0;
      for (int64_t j = 1; j < n; ++j) {
        T v = base[j * inner];
        if (is_max ? v > best : v < best) { best = v; bi = j; }
      }
      out[t] = best;
      if (argidx) argidx[t] = bi;
    } else {
      Acc s = 0;
      for (int64_t j = 0; j < n; ++j) s += static_cast<Acc>(base[j * inner]);
      out[t] = static_cast<T>(op == static_cast<int>(ReduceOp::Mean) ? s / static_cast<Acc>(n) : s);
    }
  }
}

int row_threads(int64_t n) {
  int64_t t = (n + 31) / 32 * 32;
  if (t > 256) t = 256;
  if (t < 32) t = 32;
  return static_cast<int>(t);
}

unsigned row_grid(int64_t rows) {
  const int64_t kMaxGrid = 1 << 30;
  return static_cast<unsigned>(rows < 1 ? 1 : (rows > kMaxGrid ? kMaxGrid : rows));
}

// ---- softmax -------------------------------------------------------------------

// x, y (rows, n): y = softmax(x) (log: log_softmax) per row, one block per row
__global__ void softmax_rows_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows,
                                    int64_t n, bool log_out) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float mx = -FLT_MAX;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) mx = xr[j] > mx ? xr[j] : mx;
    mx = block_max<float>(mx, scratch);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += expf(xr[j] - mx);
    s = block_sum<float>(s, scratch);
    if (log_out) {
      const float lse = logf(s);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = xr[j] - mx - lse;
    } else {
      const float inv = 1.0f / s;
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = expf(xr[j] - mx) * inv;
    }
  }
}

// x, y (outer, n, inner): one thread per (o, i) running math::softmax_row with stride inner
__global__ void softmax_strided_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t outer,
                                       int64_t n, int64_t inner, bool log_out) {
  const int64_t total = outer * inner;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t base = (t / inner) * n * inner + t % inner;
    math::softmax_row<float>(x + base, y + base, n, inner, log_out);
  }
}

// y, dy, dx (rows, n): softmax: dx = y (dy - sum dy y); log: dx = dy - exp(y) sum dy
__global__ void softmax_backward_rows_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                             float* __restrict__ dx, int64_t rows, int64_t n, bool log_out) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* yr = y + r * n;
    const float* gr = dy + r * n;
    float* dr = dx + r * n;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += log_out ? gr[j] : gr[j] * yr[j];
    s = block_sum<float>(s, scratch);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      dr[j] = log_out ? gr[j] - expf(yr[j]) * s : yr[j] * (gr[j] - s);
  }
}

__global__ void softmax_backward_strided_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                                float* __restrict__ dx, int64_t outer, int64_t n,
                                                int64_t inner, bool log_out) {
  const int64_t total = outer * inner;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t base = (t / inner) * n * inner + t % inner;
    math::softmax_backward_row<float>(y + base, dy + base, dx + base, n, inner, log_out);
  }
}

// ---- layer norm ------------------------------------------------------------------

// x, y (rows, n); gamma, beta (n) or null; mean, rstd (rows). One block per row,
// two passes as math::layer_norm_row: mu, then the biased variance about mu.
__global__ void layer_norm_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                  const float* __restrict__ beta, float* __restrict__ y,
                                  float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                                  int64_t n, float eps) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += xr[j];
    const float mu = block_sum<float>(s, scratch) / static_cast<float>(n);
    float v = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) v += (xr[j] - mu) * (xr[j] - mu);
    const float var = block_sum<float>(v, scratch) / static_cast<float>(n);
    const float rs = 1.0f / sqrtf(var + eps);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float xh = (xr[j] - mu) * rs;
      yr[j] = gamma ? xh * gamma[j] + (beta ? beta[j] : 0.0f) : xh;
    }
    if (threadIdx.x == 0) {
      mean[r] = mu;
      rstd[r] = rs;
    }
  }
}

// dx (rows, n) = rstd (g - mean(g) - xh mean(g xh)), g = dy gamma (math::layer_norm_backward_row)
__global__ void layer_norm_backward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                           const float* __restrict__ dy, const float* __restrict__ mean,
                                           const float* __restrict__ rstd, float* __restrict__ dx,
                                           int64_t rows, int64_t n) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    const float* gr = dy + r * n;
    float* dr = dx + r * n;
    const float mu = mean[r], rs = rstd[r];
    float a = 0.0f, b = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float g = gamma ? gr[j] * gamma[j] : gr[j];
      a += g;
      b += g * (xr[j] - mu) * rs;
    }
    const float mg = block_sum<float>(a, scratch) / static_cast<float>(n);
    const float mgx = block_sum<float>(b, scratch) / static_cast<float>(n);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float g = gamma ? gr[j] * gamma[j] : gr[j];
      const float xh = (xr[j] - mu) * rs;
      dr[j] = rs * (g - mg - xh * mgx);
    }
  }
}

// dgamma (n) = sum_r dy xh, dbeta (n) = sum_r dy; one thread per column, double sums (as the CPU)
__global__ void layer_norm_param_grad_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                             const float* __restrict__ mean, const float* __restrict__ rstd,
                                             float* __restrict__ dgamma, float* __restrict__ dbeta,
                                             int64_t rows, int64_t n) {
  IPSNET_GRID_STRIDE(i, n) {
    double sg = 0.0, sb = 0.0;
    for (int64_t r = 0; r < rows; ++r) {
      const double g = dy[r * n + i];
      sg += g * (static_cast<double>(x[r * n + i]) - mean[r]) * rstd[r];
      sb += g;
    }
    if (dgamma) dgamma[i] = static_cast<float>(sg);
    if (dbeta) dbeta[i] = static_cast<float>(sb);
  }
}

}  // namespace

void reduce_cuda(CudaContext& ctx, ReduceOp op, DType t, const void* x, int64_t outer, int64_t n,
                 int64_t inner, void* out, int64_t* argidx) {
  if (outer * inner == 0) return;
  auto launch = [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x);
    T* op_ = static_cast<T*>(out);
    if (inner == 1) {
      reduce_rows_kernel<T><<<row_grid(outer), row_threads(n), 0, ctx.stream>>>(xp, outer, n, op_, argidx,
                                                                               static_cast<int>(op));
      IPSNET_LAUNCH_CHECK("reduce_rows_kernel");
    } else {
      reduce_columns_kernel<T><<<grid_for(ctx, outer * inner, kThreads), kThreads, 0, ctx.stream>>>(
          xp, outer, n, inner, op_, argidx, static_cast<int>(op));
      IPSNET_LAUNCH_CHECK("reduce_columns_kernel");
    }
  };
  if (t == DType::Float32) launch(float{});
  else if (t == DType::Int64) launch(int64_t{});
  else IPSNET_FAIL("reduce: ", dtype_name(t), " is not supported on CUDA (float32, int64)");
}

void softmax_cuda(CudaContext& ctx, const float* x, float* y, int64_t outer, int64_t n, int64_t inner,
                  bool log) {
  if (outer * inner * n == 0) return;
  if (inner == 1) {
    softmax_rows_kernel<<<row_grid(outer), row_threads(n), 0, ctx.stream>>>(x, y, outer, n, log);
    IPSNET_LAUNCH_CHECK("softmax_rows_kernel");
  } else {
    softmax_strided_kernel<<<grid_for(ctx, outer * inner, kThreads), kThreads, 0, ctx.stream>>>(
        x, y, outer, n, inner, log);
    IPSNET_LAUNCH_CHECK("softmax_strided_kernel");
  }
}

void softmax_backward_cuda(CudaContext& ctx, const float* y, const float* dy, float* dx, int64_t outer,
                           int64_t n, int64_t inner, bool log) {
  if (outer * inner * n == 0) return;
  if (inner == 1) {
    softmax_backward_rows_kernel<<<row_grid(outer), row_threads(n), 0, ctx.stream>>>(y, dy, dx, outer, n,
                                                                                     log);
    IPSNET_LAUNCH_CHECK("softmax_backward_rows_kernel");
  } else {
    softmax_backward_strided_kernel<<<grid_for(ctx, outer * inner, kThreads), kThreads, 0, ctx.stream>>>(
        y, dy, dx, outer, n, inner, log);
    IPSNET_LAUNCH_CHECK("softmax_backward_strided_kernel");
  }
}

void layer_norm_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* beta, float* y,
                     float* mean, float* rstd, int64_t rows, int64_t n, float eps) {
  if (rows * n == 0) return;
  layer_norm_kernel<<<row_grid(rows), row_threads(n), 0, ctx.stream>>>(x, gamma, beta, y, mean, rstd, rows,
                                                                      n, eps);
  IPSNET_LAUNCH_CHECK("layer_norm_kernel");
}

void layer_norm_backward_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* dy,
                              const float* mean, const float* rstd, float* dx, float* dgamma,
                              float* dbeta, int64_t rows, int64_t n) {
  if (n == 0) return;
  if (rows > 0) {
    layer_norm_backward_kernel<<<row_grid(rows), row_threads(n), 0, ctx.stream>>>(x, gamma, dy, mean, rstd,
                                                                                 dx, rows, n);
    IPSNET_LAUNCH_CHECK("layer_norm_backward_kernel");
  }
  if (dgamma || dbeta) {
    layer_norm_param_grad_kernel<<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
        x, dy, mean, rstd, dgamma, dbeta, rows, n);
    IPSNET_LAUNCH_CHECK("layer_norm_param_grad_kernel");
  }
}

}  // namespace cuda
}  // namespace ipsnet
