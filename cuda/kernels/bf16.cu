// Mixed precision (config key 'precision: bf16'): the float32 operands of the
// bfloat16 cuBLAS products and cuDNN convolutions are rounded to bfloat16 on
// the device into workspaces from the caching allocator, and cuDNN's bfloat16
// outputs are widened back to float32. Rounding is to nearest even
// (__float2bfloat16_rn), the rounding of the CPU path (oneDNN's reorders), so
// both feed the same bfloat16 values to their kernels.
// Accumulate rule: every launcher writes (=) its output.
#include <cuda_bf16.h>

#include "cuda/kernels/common.cuh"

namespace ipsnet {
namespace cuda {

namespace {

// dst (batch, rows, cols) dense = bf16(src[b * stride + r * ld + c])
__global__ void float_to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t batch, int64_t rows,
                                     int64_t cols, int64_t ld, int64_t stride) {
  const int64_t total = batch * rows * cols;
  IPSNET_GRID_STRIDE(i, total) {
    const int64_t col = i % cols, row = (i / cols) % rows, b = i / (cols * rows);
    dst[i] = __float2bfloat16_rn(src[b * stride + row * ld + col]);
  }
}

__global__ void bf16_to_float_kernel(const __nv_bfloat16* src, float* dst, int64_t n) {
  IPSNET_GRID_STRIDE(i, n) { dst[i] = __bfloat162float(src[i]); }
}

}  // namespace

void float_to_bf16_cuda(CudaContext& ctx, const float* src, void* dst, int64_t batch, int64_t rows, int64_t cols,
                        int64_t ld, int64_t stride) {
  const int64_t total = batch * rows * cols;
  if (total == 0) return;
  float_to_bf16_kernel<<<grid_for(ctx, total, kThreads), kThreads, 0, ctx.stream>>>(
      src, static_cast<__nv_bfloat16*>(dst), batch, rows, cols, ld, stride);
  IPSNET_LAUNCH_CHECK("float_to_bf16_kernel");
}

void bf16_to_float_cuda(CudaContext& ctx, const void* src, float* dst, int64_t n) {
  if (n == 0) return;
  bf16_to_float_kernel<<<grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
      static_cast<const __nv_bfloat16*>(src), dst, n);
  IPSNET_LAUNCH_CHECK("bf16_to_float_kernel");
}

ScopedDeviceBuffer bf16_copy(CudaContext& ctx, const float* src, int64_t batch, int64_t rows, int64_t cols,
                             int64_t ld, int64_t stride) {
  const int64_t total = batch * rows * cols;
  ScopedDeviceBuffer buf(*ctx.allocator, static_cast<size_t>(total) * kBf16Bytes);
  float_to_bf16_cuda(ctx, src, buf.data(), batch, rows, cols, ld, stride);
  return buf;
}

}  // namespace cuda
}  // namespace ipsnet
