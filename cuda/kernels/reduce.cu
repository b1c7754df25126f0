// Reductions, softmax and layer norm.
//
// Rows that are contiguous (inner == 1) get one block per row with the
// block-parallel form of the formulas in engine/math/rows.h; when there are
// too few rows to fill the device (a full `sum`), each row is split over
// several blocks whose partial results a second kernel combines in a fixed
// order. Column sums (inner > 1: bias gradients, sums over a leading axis)
// and the layer-norm parameter gradients run tiled: a block of 32 x 8
// threads reads 32 adjacent columns (coalesced) over a range of rows, and the
// rows are split over blocks until the device is full; the partial sums are
// combined in a fixed order, so the result does not depend on timing.
// Strided Max/Min and softmax (inner > 1) run one thread per column calling
// the row bodies of rows.h, with reads coalesced across the inner axis.
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

// x (outer, n) -> out (outer), argidx (outer). Block b reduces segment
// b % splits (chunk elements) of row b / splits. splits == 1: the result is
// written to out/argidx; else the partial result goes to psum / pval, pidx
// (outer * splits) for reduce_rows_combine_kernel.
template <typename T>
__global__ void reduce_rows_kernel(const T* __restrict__ x, int64_t outer, int64_t n, int64_t splits,
                                   int64_t chunk, T* __restrict__ out, int64_t* __restrict__ argidx,
                                   typename AccOf<T>::type* __restrict__ psum, T* __restrict__ pval,
                                   int64_t* __restrict__ pidx, int op) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc s_acc[32];
  __shared__ T s_val[32];
  __shared__ int64_t s_idx[32];
  const bool is_max = op == static_cast<int>(ReduceOp::Max);
  const bool is_arg = is_max || op == static_cast<int>(ReduceOp::Min);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int64_t blocks = outer * splits;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t r = b / splits, j0 = (b % splits) * chunk;
    const int64_t j1 = j0 + chunk < n ? j0 + chunk : n;
    const T* row = x + r * n;
    if (!is_arg) {
      Acc s = 0;
      for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x) s += static_cast<Acc>(row[j]);
      s = block_sum<Acc>(s, s_acc);
      if (threadIdx.x == 0) {
        if (splits > 1) psum[b] = s;
        else out[r] = static_cast<T>(op == static_cast<int>(ReduceOp::Mean) ? s / static_cast<Acc>(n) : s);
      }
      continue;
    }
    T best = T(0);
    int64_t bi = -1;
    for (int64_t j = j0 + threadIdx.x; j < j1; j += blockDim.x)
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
        if (splits > 1) {
          pval[b] = best;
          pidx[b] = bi;
        } else {
          out[r] = best;
          if (argidx) argidx[r] = bi;
        }
      }
    }
    __syncthreads();
  }
}

// out (outer), argidx (outer) from the partial results (outer, splits) of
// reduce_rows_kernel, combined in split order (sums) or by arg_better (a
// total order, so the combination order does not matter).
template <typename T>
__global__ void reduce_rows_combine_kernel(const typename AccOf<T>::type* __restrict__ psum,
                                           const T* __restrict__ pval, const int64_t* __restrict__ pidx,
                                           int64_t outer, int64_t n, int64_t splits, T* __restrict__ out,
                                           int64_t* __restrict__ argidx, int op) {
  using Acc = typename AccOf<T>::type;
  const bool is_max = op == static_cast<int>(ReduceOp::Max);
  const bool is_arg = is_max || op == static_cast<int>(ReduceOp::Min);
  IPSNET_GRID_STRIDE(r, outer) {
    if (!is_arg) {
      Acc s = 0;
      for (int64_t p = 0; p < splits; ++p) s += psum[r * splits + p];
      out[r] = static_cast<T>(op == static_cast<int>(ReduceOp::Mean) ? s / static_cast<Acc>(n) : s);
    } else {
      T best = T(0);
      int64_t bi = -1;
      for (int64_t p = 0; p < splits; ++p)
        if (arg_better(pval[r * splits + p], pidx[r * splits + p], best, bi, is_max)) {
          best = pval[r * splits + p];
          bi = pidx[r * splits + p];
        }
      out[r] = best;
      if (argidx) argidx[r] = bi;
    }
  }
}

// ---- tiled column sums ------------------------------------------------------------
// Columns (o, i) of a (outer, n, inner) problem, summed over n. A block of
// kColTile x kColRows threads covers kColTile adjacent columns of one o and
// the row range of its split (blockIdx.y); each thread sums every kColRows-th
// row, the block then sums its kColRows partials per column. One split: the
// block stores the result; several: it writes partial (splits, NOUT, outer *
// inner) and column_sums_combine_kernel adds the splits in order.
// Load(o, j, i, v) adds element (o, j, i)'s NOUT contributions to v;
// Store(k, col, sum) writes output k of column col = o * inner + i.

constexpr int kColTile = 32;
constexpr int kColRows = 8;

template <int NOUT, typename Acc, typename Load, typename Store>
__global__ void column_sums_kernel(Load load, Store store, int64_t outer, int64_t n, int64_t inner,
                                   int64_t tiles, int64_t rows_per_split, Acc* __restrict__ partial) {
  __shared__ Acc sh[NOUT][kColRows][kColTile];
  const int64_t o = blockIdx.x / tiles, i = (blockIdx.x % tiles) * kColTile + threadIdx.x;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t j1 = j0 + rows_per_split < n ? j0 + rows_per_split : n;
  Acc acc[NOUT];
#pragma unroll
  for (int k = 0; k < NOUT; ++k) acc[k] = Acc(0);
  if (i < inner)
    for (int64_t j = j0 + threadIdx.y; j < j1; j += kColRows) load(o, j, i, acc);
#pragma unroll
  for (int k = 0; k < NOUT; ++k) sh[k][threadIdx.y][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y != 0 || i >= inner) return;
  const int64_t cols = outer * inner, col = o * inner + i;
#pragma unroll
  for (int k = 0; k < NOUT; ++k) {
    Acc sum = Acc(0);
#pragma unroll
    for (int r = 0; r < kColRows; ++r) sum += sh[k][r][threadIdx.x];
    if (gridDim.y == 1) store(k, col, sum);
    else partial[(static_cast<int64_t>(blockIdx.y) * NOUT + k) * cols + col] = sum;
  }
}

template <int NOUT, typename Acc, typename Store>
__global__ void column_sums_combine_kernel(Store store, const Acc* __restrict__ partial, int64_t splits,
                                           int64_t cols) {
  IPSNET_GRID_STRIDE(col, cols) {
#pragma unroll
    for (int k = 0; k < NOUT; ++k) {
      Acc sum = Acc(0);
      for (int64_t p = 0; p < splits; ++p) sum += partial[(p * NOUT + k) * cols + col];
      store(k, col, sum);
    }
  }
}

/// Launches column_sums_kernel (and the combine when the rows are split).
template <int NOUT, typename Acc, typename Load, typename Store>
void column_sums(CudaContext& ctx, const char* what, Load load, Store store, int64_t outer, int64_t n,
                 int64_t inner) {
  const int64_t tiles = (inner + kColTile - 1) / kColTile;
  const int64_t col_blocks = outer * tiles;
  IPSNET_CHECK(col_blocks <= 0x7fffffff, what, ": ", outer, " x ", inner, " columns are too many for one grid");
  // Enough blocks to fill the device a few times, each with at least 64 rows
  // (8 per thread); at most 4096 splits.
  const int64_t target = static_cast<int64_t>(ctx.sm_count) * 4;
  int64_t splits = (target + col_blocks - 1) / col_blocks;
  const int64_t max_splits = (n + 63) / 64;
  if (splits > max_splits) splits = max_splits;
  if (splits > 4096) splits = 4096;
  if (splits < 1) splits = 1;
  const int64_t rows_per_split = (n + splits - 1) / splits;
  splits = n > 0 ? (n + rows_per_split - 1) / rows_per_split : 1;
  ScopedDeviceBuffer partial;
  const int64_t cols = outer * inner;
  if (splits > 1) partial = ScopedDeviceBuffer(*ctx.allocator, static_cast<size_t>(splits * NOUT * cols) * sizeof(Acc));
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(splits));
  const dim3 block(kColTile, kColRows);
  column_sums_kernel<NOUT, Acc><<<grid, block, 0, ctx.stream>>>(load, store, outer, n, inner, tiles,
                                                                  rows_per_split, static_cast<Acc*>(partial.data()));
  IPSNET_LAUNCH_CHECK("column_sums_kernel");
  if (splits > 1) {
    column_sums_combine_kernel<NOUT, Acc><<<grid_for(ctx, cols, kThreads), kThreads, 0, ctx.stream>>>(
        store, static_cast<const Acc*>(partial.data()), splits, cols);
    IPSNET_LAUNCH_CHECK("column_sums_combine_kernel");
  }
  // The partial buffer returns to the cache here; stream order keeps the reuse safe.
}

// x (outer, n, inner) element -> its value in the accumulator type
template <typename T>
struct ColumnLoad {
  const T* x;
  int64_t n, inner;
  __device__ void operator()(int64_t o, int64_t j, int64_t i, typename AccOf<T>::type* v) const {
    v[0] += static_cast<typename AccOf<T>::type>(x[(o * n + j) * inner + i]);
  }
};

template <typename T>
struct ColumnStore {
  T* out;
  int64_t n;
  bool mean;
  __device__ void operator()(int, int64_t col, typename AccOf<T>::type s) const {
    using Acc = typename AccOf<T>::type;
    out[col] = static_cast<T>(mean ? s / static_cast<Acc>(n) : s);
  }
};

// x (outer, n, inner) -> out (outer, inner); one thread per column, the CPU's
// column loop (Max/Min: their plain comparison is sequential by definition)
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

// dgamma (n) = sum_r dy xh, dbeta (n) = sum_r dy, xh = (x - mean) rstd: tiled
// column sums over the rows (outer = 1), in double as the CPU
struct LayerNormParamLoad {
  const float* x;
  const float* dy;
  const float* mean;
  const float* rstd;
  int64_t n;
  __device__ void operator()(int64_t, int64_t r, int64_t i, double* v) const {
    const double g = dy[r * n + i];
    v[0] += g * (static_cast<double>(x[r * n + i]) - mean[r]) * rstd[r];
    v[1] += g;
  }
};
struct LayerNormParamStore {
  float* dgamma;
  float* dbeta;
  __device__ void operator()(int k, int64_t i, double s) const {
    float* out = k == 0 ? dgamma : dbeta;
    if (out) out[i] = static_cast<float>(s);
  }
};

}  // namespace

void reduce_cuda(CudaContext& ctx, ReduceOp op, DType t, const void* x, int64_t outer, int64_t n,
                 int64_t inner, void* out, int64_t* argidx) {
  if (outer * inner == 0) return;
  const bool is_arg = op == ReduceOp::Max || op == ReduceOp::Min;
  auto launch = [&](auto z) {
    using T = decltype(z);
    using Acc = typename AccOf<T>::type;
    const T* xp = static_cast<const T*>(x);
    T* op_ = static_cast<T*>(out);
    if (inner == 1) {
      // Split rows over several blocks when there are too few rows to fill
      // the device (at least 8 elements per thread and segment).
      const int threads = row_threads(n);
      const int64_t target = static_cast<int64_t>(ctx.sm_count) * 4;
      int64_t splits = outer >= target ? 1 : (target + outer - 1) / outer;
      const int64_t max_splits = (n + threads * 8 - 1) / (threads * 8);
      if (splits > max_splits) splits = max_splits;
      if (splits < 1) splits = 1;
      const int64_t chunk = (n + splits - 1) / splits;
      if (n > 0) splits = (n + chunk - 1) / chunk;
      ScopedDeviceBuffer psum, pval, pidx;
      if (splits > 1) {
        const size_t parts = static_cast<size_t>(outer * splits);
        if (is_arg) {
          pval = ScopedDeviceBuffer(*ctx.allocator, parts * sizeof(T));
          pidx = ScopedDeviceBuffer(*ctx.allocator, parts * sizeof(int64_t));
        } else {
          psum = ScopedDeviceBuffer(*ctx.allocator, parts * sizeof(Acc));
        }
      }
      reduce_rows_kernel<T><<<row_grid(outer * splits), threads, 0, ctx.stream>>>(
          xp, outer, n, splits, chunk, op_, argidx, static_cast<Acc*>(psum.data()), static_cast<T*>(pval.data()),
          static_cast<int64_t*>(pidx.data()), static_cast<int>(op));
      IPSNET_LAUNCH_CHECK("reduce_rows_kernel");
      if (splits > 1) {
        reduce_rows_combine_kernel<T><<<grid_for(ctx, outer, kThreads), kThreads, 0, ctx.stream>>>(
            static_cast<const Acc*>(psum.data()), static_cast<const T*>(pval.data()),
            static_cast<const int64_t*>(pidx.data()), outer, n, splits, op_, argidx, static_cast<int>(op));
        IPSNET_LAUNCH_CHECK("reduce_rows_combine_kernel");
      }
    } else if (!is_arg) {
      column_sums<1, Acc>(ctx, "reduce", ColumnLoad<T>{xp, n, inner}, ColumnStore<T>{op_, n, op == ReduceOp::Mean},
                          outer, n, inner);
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
  if (dgamma || dbeta)
    column_sums<2, double>(ctx, "layer_norm_backward", LayerNormParamLoad{x, dy, mean, rstd, n},
                           LayerNormParamStore{dgamma, dbeta}, 1, rows, n);
}

}  // namespace cuda
}  // namespace ipsnet
