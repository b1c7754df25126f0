// Launchers of the CUDA kernels (kernels/*.cu). Each takes raw device pointers,
// the sizes, and the device context (its stream), launches, and follows the
// launch with IPSNET_LAUNCH_CHECK naming the kernel. The element and row math
// are the bodies in engine/math, shared with the CPU backend.
//
// Accumulate rule: every launcher writes (=) its outputs except scatter_add,
// index_add (+=, atomics) and gemm with beta != 0.
#pragma once
#include <cstdint>

#include "cuda/context.h"
#include "engine/backend/backend.h"
#include "engine/math/elementwise.h"
#include "engine/tensor/dtype.h"

namespace ipsnet {
namespace cuda {

constexpr int kMaxDims = 8;

/// K operands sharing one (coalesced) shape, innermost dim last; strides in elements.
template <int K>
struct StridedGeom {
  int nd = 1;
  int64_t shape[kMaxDims] = {1};
  int64_t stride[K][kMaxDims] = {};
};

// ---- elementwise.cu --------------------------------------------------------
/// dst = src (dtype conversion allowed); n = numel.
void copy_cuda(CudaContext& ctx, DType src_t, const void* src, DType dst_t, void* dst,
               const StridedGeom<2>& g, int64_t n, bool contiguous);
void fill_cuda(CudaContext& ctx, DType t, void* dst, double value, const StridedGeom<1>& g,
               int64_t n, bool contiguous);
/// x, y: (n)
void unary_cuda(CudaContext& ctx, math::UnaryOp op, const float* x, float* y, int64_t n, float alpha);
/// x, y, dy, dx: (n); x or y may be null when the op does not read it.
void unary_backward_cuda(CudaContext& ctx, math::UnaryOp op, const float* x, const float* y,
                         const float* dy, float* dx, int64_t n, float alpha);
/// a, b strided views of out's shape; t: float32 or int64.
void binary_cuda(CudaContext& ctx, math::BinaryOp op, DType t, const void* a, const void* b,
                 void* out, const StridedGeom<3>& g, int64_t n, bool contiguous);
void masked_fill_cuda(CudaContext& ctx, DType t, const void* x, DType mask_t, const void* mask,
                      double value, void* out, const StridedGeom<3>& g, int64_t n);
/// mask: (n), draw i = philox_u32(seed, stream, offset + i).
void dropout_mask_cuda(CudaContext& ctx, float* mask, int64_t n, float p, uint64_t seed,
                       uint64_t stream, uint64_t offset);
/// p, g, m, v: (n); c1 = 1 - beta1^t, c2 = 1 - beta2^t.
void adamw_cuda(CudaContext& ctx, float* p, const float* g, float* m, float* v, int64_t n,
                float lr, float beta1, float beta2, float eps, float weight_decay, float c1, float c2);
/// C[b] (m, n) with row stride ldc: C = beta C (beta == 0 writes zeros).
void scale_matrix_cuda(CudaContext& ctx, float* c, int64_t batch, int64_t m, int64_t n,
                       int64_t ldc, int64_t stride_c, float beta);

// ---- reduce.cu ---------------------------------------------------------------
/// x (outer, n, inner) -> out (outer, inner); argidx (outer, inner) or null.
void reduce_cuda(CudaContext& ctx, ReduceOp op, DType t, const void* x, int64_t outer, int64_t n,
                 int64_t inner, void* out, int64_t* argidx);
/// x, y: (outer, n, inner), along n.
void softmax_cuda(CudaContext& ctx, const float* x, float* y, int64_t outer, int64_t n,
                  int64_t inner, bool log);
void softmax_backward_cuda(CudaContext& ctx, const float* y, const float* dy, float* dx,
                           int64_t outer, int64_t n, int64_t inner, bool log);
/// x, y: (rows, n); gamma, beta: (n) or null; mean, rstd: (rows).
void layer_norm_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* beta,
                     float* y, float* mean, float* rstd, int64_t rows, int64_t n, float eps);
/// dx (rows, n) =; dgamma, dbeta (n) = (null: skipped).
void layer_norm_backward_cuda(CudaContext& ctx, const float* x, const float* gamma,
                              const float* dy, const float* mean, const float* rstd, float* dx,
                              float* dgamma, float* dbeta, int64_t rows, int64_t n);

// ---- index.cu ------------------------------------------------------------------
// Indices are checked in the kernels; an out-of-range one is skipped and
// reported at the next synchronisation (check_index_errors, context.h).
/// x (outer, n, inner), index/out (outer, k, inner).
void gather_cuda(CudaContext& ctx, DType t, const void* x, const int64_t* index, void* out,
                 int64_t outer, int64_t n, int64_t k, int64_t inner);
void scatter_add_cuda(CudaContext& ctx, DType t, const void* src, const int64_t* index, void* out,
                      int64_t outer, int64_t n, int64_t k, int64_t inner);
/// index (k)
void index_select_cuda(CudaContext& ctx, DType t, const void* x, const int64_t* index, void* out,
                       int64_t outer, int64_t n, int64_t k, int64_t inner);
void index_add_cuda(CudaContext& ctx, DType t, const void* src, const int64_t* index, void* out,
                    int64_t outer, int64_t n, int64_t k, int64_t inner);
/// x (rows, n) -> values, indices (rows, k), sorted; ties by lower index, NaN largest.
void topk_cuda(CudaContext& ctx, DType t, const void* x, void* values, int64_t* indices,
               int64_t rows, int64_t n, int64_t k, bool largest);
/// image (B, C, H, W) -> out (B, K, C, ph, pw) at patch ids index (B, K).
void cut_patches_cuda(CudaContext& ctx, DType t, const void* image, const int64_t* index, void* out,
                      int64_t b, int64_t c, int64_t h, int64_t w, int64_t k, int64_t ph,
                      int64_t pw, int64_t sh, int64_t sw);

// ---- norm_pool.cu ----------------------------------------------------------------
/// x, y (N, C, S); gamma, beta (C) or null; save_mean, save_rstd (C); running stats (C) or null.
void batch_norm_training_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* beta, float* y,
                              float* save_mean, float* save_rstd, float* running_mean, float* running_var, int64_t n,
                              int64_t c, int64_t s, double momentum, double eps);
void batch_norm_inference_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* beta,
                               const float* mean, const float* var, float* y, int64_t n, int64_t c, int64_t s,
                               double eps);
/// dx (N, C, S) or null; dgamma, dbeta (C) or null; x may be null when unused.
void batch_norm_backward_cuda(CudaContext& ctx, const float* x, const float* gamma, const float* dy,
                              const float* save_mean, const float* save_rstd, float* dx, float* dgamma, float* dbeta,
                              int64_t n, int64_t c, int64_t s, bool stats_are_constant);
/// x (N, C, H, W) -> y, indices (N, C, ho, wo); indices may be null.
void max_pool2d_forward_cuda(CudaContext& ctx, const float* x, float* y, int64_t* indices, const Pool2dGeometry& g);
/// dx (N, C, H, W) = 0, then += dy at indices.
void max_pool2d_backward_cuda(CudaContext& ctx, const float* dy, const int64_t* indices, float* dx,
                              const Pool2dGeometry& g);
/// dx (planes, hw) = dy (planes) / hw
void avg_pool2d_global_backward_cuda(CudaContext& ctx, const float* dy, float* dx, int64_t planes, int64_t hw);

// ---- bf16.cu (precision: bf16) ---------------------------------------------------
/// Bytes of one bfloat16 element (the device buffers below hold __nv_bfloat16).
constexpr size_t kBf16Bytes = 2;
/// dst (batch, rows, cols), dense bfloat16 = src[b * stride + r * ld + c] rounded to nearest even.
void float_to_bf16_cuda(CudaContext& ctx, const float* src, void* dst, int64_t batch, int64_t rows, int64_t cols,
                        int64_t ld, int64_t stride);
/// dst (n) float32 = src (n) bfloat16 (exact).
void bf16_to_float_cuda(CudaContext& ctx, const void* src, float* dst, int64_t n);
/// A dense bfloat16 copy of src (as float_to_bf16_cuda) in a workspace from the
/// device's caching allocator (counted; returned on scope exit, stream order
/// makes that safe while the kernels reading it are still queued).
ScopedDeviceBuffer bf16_copy(CudaContext& ctx, const float* src, int64_t batch, int64_t rows, int64_t cols,
                             int64_t ld, int64_t stride);
/// The same for n contiguous floats.
inline ScopedDeviceBuffer bf16_copy(CudaContext& ctx, const float* src, int64_t n) {
  return bf16_copy(ctx, src, 1, 1, n, n, n);
}

}  // namespace cuda
}  // namespace ipsnet
