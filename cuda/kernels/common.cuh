// Helpers shared by the kernel files: grid-stride loops, strided offsets,
// warp and block reductions.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/kernels.h"

namespace ipsnet {
namespace cuda {

constexpr int kThreads = 256;

#define IPSNET_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

/// Element offsets of linear index l for each of K operands.
template <int K>
__device__ __forceinline__ void strided_offsets(const StridedGeom<K>& g, int64_t l, int64_t* off) {
#pragma unroll
  for (int k = 0; k < K; ++k) off[k] = 0;
  for (int d = g.nd - 1; d >= 0; --d) {
    int64_t sz = g.shape[d];
    int64_t i = l % sz;
    l /= sz;
#pragma unroll
    for (int k = 0; k < K; ++k) off[k] += i * g.stride[k][d];
  }
}

/// Whether index v lies in [0, n); if not, records the first such index (op,
/// value, size) in the context's error record for check_index_errors().
__device__ __forceinline__ bool index_ok(int64_t v, int64_t n, IndexErrorRecord* err, IndexOp op) {
  if (v >= 0 && v < n) return true;
  if (atomicCAS(&err->state, 0ull, 1ull) == 0ull) {
    err->value = v;
    err->size = n;
    err->op = static_cast<int>(op);
    __threadfence();
    atomicExch(&err->state, 2ull);
  }
  return false;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    T u = __shfl_xor_sync(0xffffffffu, v, o);
    v = u > v ? u : v;
  }
  return v;
}

/// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
/// `scratch` holds 32 T; the call ends with a barrier so scratch may be reused.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? scratch[lane] : T(0);
  r = warp_sum(r);
  __syncthreads();
  return r;
}

template <typename T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? scratch[lane] : scratch[0];
  r = warp_max(r);
  __syncthreads();
  return r;
}

}  // namespace cuda
}  // namespace ipsnet
