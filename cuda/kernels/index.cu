// Indexing kernels: gather / scatter_add, index_select / index_add, top-k
// over the M+I candidates of an IPS iteration, and cutting
// patches out of images on the device.
// Accumulate rule: scatter_add and index_add accumulate (+=, atomics, so the
// order of float additions is not fixed); everything else is written (=).
// Indices are checked inside the kernels, without a synchronisation: an
// out-of-range one is skipped (reads give 0) and recorded for
// check_index_errors() (context.h), which throws at the next synchronisation.
#include <climits>

#include "cuda/kernels/common.cuh"
#include "engine/backend/geometry.h"

namespace ipsnet {
namespace cuda {

namespace {

// out (outer, k, inner) = x (outer, n, inner) at index (outer, k, inner) along n
// (an out-of-range index is recorded in err and reads 0)
template <typename T>
__global__ void gather_kernel(const T* __restrict__ x, const int64_t* __restrict__ index, T* __restrict__ out,
                              int64_t outer, int64_t n, int64_t k, int64_t inner, IndexErrorRecord* err) {
  const int64_t total = outer * k * inner;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t i = t % inner, o = t / (k * inner), j = index[t];
    out[t] = index_ok(j, n, err, IndexOp::Gather) ? x[(o * n + j) * inner + i] : T(0);
  }
}

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int64_t* p, int64_t v) {
  // Two's complement: unsigned wrap-around addition is signed addition.
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

// out (outer, n, inner) += src (outer, k, inner) at index (outer, k, inner) along n
// (an out-of-range index is recorded in err and skipped)
template <typename T>
__global__ void scatter_add_kernel(const T* __restrict__ src, const int64_t* __restrict__ index, T* out,
                                   int64_t outer, int64_t n, int64_t k, int64_t inner, IndexErrorRecord* err) {
  const int64_t total = outer * k * inner;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t i = t % inner, o = t / (k * inner), j = index[t];
    if (index_ok(j, n, err, IndexOp::ScatterAdd)) atomic_add(out + (o * n + j) * inner + i, src[t]);
  }
}

// out (outer, k, inner) = x (outer, n, inner) at index (k) along n
template <typename T>
__global__ void index_select_kernel(const T* __restrict__ x, const int64_t* __restrict__ index,
                                    T* __restrict__ out, int64_t outer, int64_t n, int64_t k, int64_t inner,
                                    IndexErrorRecord* err) {
  const int64_t total = outer * k * inner;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t i = t % inner, j = (t / inner) % k, o = t / (k * inner), v = index[j];
    out[t] = index_ok(v, n, err, IndexOp::IndexSelect) ? x[(o * n + v) * inner + i] : T(0);
  }
}

// out (outer, n, inner) += src (outer, k, inner) at index (k) along n
template <typename T>
__global__ void index_add_kernel(const T* __restrict__ src, const int64_t* __restrict__ index, T* out,
                                 int64_t outer, int64_t n, int64_t k, int64_t inner, IndexErrorRecord* err) {
  const int64_t total = outer * k * inner;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t i = t % inner, j = (t / inner) % k, o = t / (k * inner), v = index[j];
    if (index_ok(v, n, err, IndexOp::IndexAdd)) atomic_add(out + (o * n + v) * inner + i, src[t]);
  }
}

// ---- top-k -----------------------------------------------------------------------
// Bitonic sort of each row under the CPU backend's strict order: value first
// (NaN counts as largest), then the lower index. The order is total, so the
// sorted prefix equals the CPU's partial_sort exactly. Padding (index
// kPadIndex) sorts last.

constexpr int kPadIndex = INT_MAX;

template <typename T>
__device__ __forceinline__ bool topk_before(T va, int ia, T vb, int ib, bool largest) {
  if (ia == kPadIndex) return false;
  if (ib == kPadIndex) return true;
  const bool na = va != va, nb = vb != vb;
  if (na || nb) {
    if (na && nb) return ia < ib;
    return largest ? na : nb;
  }
  if (va != vb) return largest ? va > vb : va < vb;
  return ia < ib;
}

template <typename T>
__device__ __forceinline__ void topk_compare_swap(T* v, int* idx, int64_t i, int64_t size, int64_t stride,
                                                  bool largest) {
  const int64_t j = i ^ stride;
  if (j <= i) return;
  const bool forward = (i & size) == 0;
  const bool swap = forward ? topk_before(v[j], idx[j], v[i], idx[i], largest)
                            : topk_before(v[i], idx[i], v[j], idx[j], largest);
  if (swap) {
    T tv = v[i]; v[i] = v[j]; v[j] = tv;
    int ti = idx[i]; idx[i] = idx[j]; idx[j] = ti;
  }
}

// x (rows, n) -> values, indices (rows, k); one block per row, the row sorted in shared memory (P = 2^m >= n)
template <typename T>
__global__ void topk_shared_kernel(const T* __restrict__ x, T* __restrict__ values, int64_t* __restrict__ indices,
                                   int64_t rows, int64_t n, int64_t k, int64_t p2, bool largest) {
  extern __shared__ unsigned char smem[];
  T* v = reinterpret_cast<T*>(smem);
  int* idx = reinterpret_cast<int*>(v + p2);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    for (int64_t i = threadIdx.x; i < p2; i += blockDim.x) {
      v[i] = i < n ? xr[i] : T(0);
      idx[i] = i < n ? static_cast<int>(i) : kPadIndex;
    }
    __syncthreads();
    for (int64_t size = 2; size <= p2; size <<= 1)
      for (int64_t stride = size >> 1; stride > 0; stride >>= 1) {
        for (int64_t i = threadIdx.x; i < p2; i += blockDim.x) topk_compare_swap(v, idx, i, size, stride, largest);
        __syncthreads();
      }
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
      values[r * k + j] = v[j];
      indices[r * k + j] = idx[j];
    }
    __syncthreads();
  }
}

// Rows too long for shared memory: scratch v, idx (rows, P) in global memory.
template <typename T>
__global__ void topk_init_kernel(const T* __restrict__ x, T* __restrict__ v, int* __restrict__ idx, int64_t rows,
                                 int64_t n, int64_t p2) {
  const int64_t total = rows * p2;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t r = t / p2, i = t % p2;
    v[t] = i < n ? x[r * n + i] : T(0);
    idx[t] = i < n ? static_cast<int>(i) : kPadIndex;
  }
}

// one (size, stride) stage of the bitonic network over every row
template <typename T>
__global__ void topk_stage_kernel(T* v, int* idx, int64_t rows, int64_t p2, int64_t size, int64_t stride,
                                  bool largest) {
  const int64_t total = rows * p2;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t r = t / p2, i = t % p2;
    topk_compare_swap(v + r * p2, idx + r * p2, i, size, stride, largest);
  }
}

template <typename T>
__global__ void topk_output_kernel(const T* __restrict__ v, const int* __restrict__ idx, T* __restrict__ values,
                                   int64_t* __restrict__ indices, int64_t rows, int64_t p2, int64_t k) {
  const int64_t total = rows * k;
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t r = t / k, j = t % k;
    values[t] = v[r * p2 + j];
    indices[t] = idx[r * p2 + j];
  }
}

// out (B, K, C, ph, pw) = patches index (B, K) of image (B, C, H, W)
template <typename T>
__global__ void cut_patches_kernel(const T* __restrict__ image, const int64_t* __restrict__ index,
                                   T* __restrict__ out, int64_t b, int64_t c, int64_t k, PatchGrid g,
                                   IndexErrorRecord* err) {
  const int64_t ph = g.patch_h, pw = g.patch_w;
  const int64_t per_patch = c * ph * pw;
  const int64_t total = b * k * per_patch, count = g.count();
  IPSNET_GRID_STRIDE(t, total) {
    const int64_t x = t % pw, y = (t / pw) % ph, ch = (t / (pw * ph)) % c;
    const int64_t bk = t / per_patch, bi = bk / k, p = index[bk];
    // (an out-of-range patch id is recorded in err and reads 0)
    out[t] = index_ok(p, count, err, IndexOp::CutPatches)
                 ? image[bi * c * g.height * g.width + g.source_offset(p, ch, y, x)]
                 : T(0);
  }
}

template <typename F>
void dispatch_float_int64(DType t, const char* what, F&& f) {
  if (t == DType::Float32) f(float{});
  else if (t == DType::Int64) f(int64_t{});
  else IPSNET_FAIL(what, ": ", dtype_name(t), " is not supported on CUDA (float32, int64)");
}

}  // namespace

void gather_cuda(CudaContext& ctx, DType t, const void* x, const int64_t* index, void* out, int64_t outer,
                 int64_t n, int64_t k, int64_t inner) {
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  dispatch_float_int64(t, "gather", [&](auto z) {
    using T = decltype(z);
    gather_kernel<T><<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(x), index, static_cast<T*>(out), outer, n, k, inner, ctx.index_error_dev);
    IPSNET_LAUNCH_CHECK("gather_kernel");
    index_kernel_queued(ctx);
  });
}

void scatter_add_cuda(CudaContext& ctx, DType t, const void* src, const int64_t* index, void* out,
                      int64_t outer, int64_t n, int64_t k, int64_t inner) {
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  dispatch_float_int64(t, "scatter_add", [&](auto z) {
    using T = decltype(z);
    scatter_add_kernel<T><<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(src), index, static_cast<T*>(out), outer, n, k, inner, ctx.index_error_dev);
    IPSNET_LAUNCH_CHECK("scatter_add_kernel");
    index_kernel_queued(ctx);
  });
}

void index_select_cuda(CudaContext& ctx, DType t, const void* x, const int64_t* index, void* out,
                       int64_t outer, int64_t n, int64_t k, int64_t inner) {
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  dispatch_float_int64(t, "index_select", [&](auto z) {
    using T = decltype(z);
    index_select_kernel<T><<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(x), index, static_cast<T*>(out), outer, n, k, inner, ctx.index_error_dev);
    IPSNET_LAUNCH_CHECK("index_select_kernel");
    index_kernel_queued(ctx);
  });
}

void index_add_cuda(CudaContext& ctx, DType t, const void* src, const int64_t* index, void* out,
                    int64_t outer, int64_t n, int64_t k, int64_t inner) {
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  dispatch_float_int64(t, "index_add", [&](auto z) {
    using T = decltype(z);
    index_add_kernel<T><<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(src), index, static_cast<T*>(out), outer, n, k, inner, ctx.index_error_dev);
    IPSNET_LAUNCH_CHECK("index_add_kernel");
    index_kernel_queued(ctx);
  });
}

void topk_cuda(CudaContext& ctx, DType t, const void* x, void* values, int64_t* indices, int64_t rows,
               int64_t n, int64_t k, bool largest) {
  if (rows == 0 || k == 0) return;
  IPSNET_CHECK(n < INT_MAX, "topk: rows of ", n, " elements are too long for the CUDA top-k");
  int64_t p2 = 1;
  while (p2 < n) p2 <<= 1;
  dispatch_float_int64(t, "topk", [&](auto z) {
    using T = decltype(z);
    const T* xp = static_cast<const T*>(x);
    T* vp = static_cast<T*>(values);
    const size_t smem = static_cast<size_t>(p2) * (sizeof(T) + sizeof(int));
    if (smem <= ctx.max_shared_per_block_optin) {
      if (smem > 48 * 1024)
        IPSNET_CUDA_CHECK(cudaFuncSetAttribute(topk_shared_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem)));
      const int threads = static_cast<int>(p2 / 2 < 32 ? 32 : (p2 / 2 > 1024 ? 1024 : p2 / 2));
      topk_shared_kernel<T><<<static_cast<unsigned>(rows < 65535 ? rows : 65535), threads, smem, ctx.stream>>>(
          xp, vp, indices, rows, n, k, p2, largest);
      IPSNET_LAUNCH_CHECK("topk_shared_kernel");
      return;
    }
    ScopedDeviceBuffer sv(*ctx.allocator, static_cast<size_t>(rows * p2) * sizeof(T));
    ScopedDeviceBuffer si(*ctx.allocator, static_cast<size_t>(rows * p2) * sizeof(int));
    T* v = static_cast<T*>(sv.data());
    int* idx = static_cast<int*>(si.data());
    const unsigned grid = grid_for(ctx, rows * p2, kThreads);
    topk_init_kernel<T><<<grid, kThreads, 0, ctx.stream>>>(xp, v, idx, rows, n, p2);
    IPSNET_LAUNCH_CHECK("topk_init_kernel");
    for (int64_t size = 2; size <= p2; size <<= 1)
      for (int64_t stride = size >> 1; stride > 0; stride >>= 1) {
        topk_stage_kernel<T><<<grid, kThreads, 0, ctx.stream>>>(v, idx, rows, p2, size, stride, largest);
        IPSNET_LAUNCH_CHECK("topk_stage_kernel");
      }
    topk_output_kernel<T><<<grid_for(ctx, rows * k, kThreads), kThreads, 0, ctx.stream>>>(v, idx, vp, indices,
                                                                                        rows, p2, k);
    IPSNET_LAUNCH_CHECK("topk_output_kernel");
    // The scratch returns to the cache here; stream order keeps the reuse safe.
  });
}

void cut_patches_cuda(CudaContext& ctx, DType t, const void* image, const int64_t* index, void* out, int64_t b,
                      int64_t c, int64_t h, int64_t w, int64_t k, int64_t ph, int64_t pw, int64_t sh, int64_t sw) {
  const int64_t total = b * k * c * ph * pw;
  if (total == 0) return;
  const PatchGrid g = make_patch_grid(h, w, ph, pw, sh, sw);
  dispatch_float_int64(t, "cut_patches", [&](auto z) {
    using T = decltype(z);
    cut_patches_kernel<T><<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(image), index, static_cast<T*>(out), b, c, k, g, ctx.index_error_dev);
    IPSNET_LAUNCH_CHECK("cut_patches_kernel");
    index_kernel_queued(ctx);
  });
}

}  // namespace cuda
}  // namespace ipsnet
