// GEMM through cuBLAS (cublasGemmStridedBatchedEx), row-major on top of the
// column-major library: C = op(A) op(B) row-major is C^T = op(B)^T op(A)^T
// column-major, so the operands are passed swapped with m and n exchanged and
// the stored matrices read as their transposes without moving data.
// Accumulate rule: C = alpha op(A) op(B) + beta C (beta == 0 overwrites).
// Batches whose C matrices overlap (stride_c == 0 with beta = 1 sums the
// products into one C) run one after another in stream order, as the CPU's
// loop does: a batched call would write them concurrently.
//
// gemm_bf16 (precision: bf16): each stored operand is rounded to bfloat16 on
// the device into a dense workspace from the caching allocator (one matrix
// when its batch stride is 0), and cublasGemmStridedBatchedEx multiplies the
// CUDA_R_16BF operands with CUBLAS_COMPUTE_32F (tensor cores, float32
// accumulation) into the float32 C; alpha = 1, beta = 0.
#include <cstdint>
#include <limits>

#include "cuda/cuda_backend.h"
#include "cuda/kernels/kernels.h"
#include "engine/backend/device_select.h"

namespace ipsnet {
namespace cuda {

namespace {
int to_int(int64_t v, const char* what) {
  IPSNET_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "gemm: ", what, " = ", v,
               " does not fit cuBLAS's int");
  return static_cast<int>(v);
}

/// Leading dimension of a row-major stored matrix (rows x cols) for cuBLAS:
/// at least cols; a single-row matrix never reads it, so it is raised.
int64_t fix_ld(int64_t ld, int64_t rows, int64_t cols) {
  const int64_t need = cols > 1 ? cols : 1;
  if (ld < need && rows <= 1) return need;
  return ld;
}
}  // namespace

void CudaBackend::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                       const Tensor& a, int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb,
                       int64_t stride_b, double beta, const Tensor& c, int64_t ldc, int64_t stride_c,
                       int64_t batch) {
  const int dev = common_device("gemm", {&a, &b, &c});
  require_float32("gemm", a);
  require_float32("gemm", b);
  require_float32("gemm", c);
  if (m == 0 || n == 0 || batch == 0) return;
  DeviceGuard guard(dev);
  CudaContext& ctx = context(dev);
  IPSNET_CHECK(stride_c >= 0, "gemm: stride_c = ", stride_c, " must not be negative");
  lda = fix_ld(lda, trans_a ? k : m, trans_a ? m : k);
  ldb = fix_ld(ldb, trans_b ? n : k, trans_b ? k : n);
  ldc = fix_ld(ldc, m, n);
  // One C spans (m - 1) ldc + n elements; a smaller batch stride makes the
  // batches' outputs overlap.
  const bool overlapping_c = batch > 1 && stride_c < (m - 1) * ldc + n;
  if (k == 0) {
    // cuBLAS may return without touching C when k == 0; C = beta C explicitly.
    if (!overlapping_c) {
      scale_matrix_cuda(ctx, c.data<float>(), batch, m, n, ldc, stride_c, static_cast<float>(beta));
    } else {
      for (int64_t i = 0; i < batch; ++i)
        scale_matrix_cuda(ctx, c.data<float>() + i * stride_c, 1, m, n, ldc, 0, static_cast<float>(beta));
    }
    return;
  }
  IPSNET_CHECK(lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n, "gemm: leading dimensions lda ",
               lda, ", ldb ", ldb, ", ldc ", ldc, " too small for m ", m, ", n ", n, ", k ", k,
               trans_a ? " (A transposed)" : "", trans_b ? " (B transposed)" : "");
  const int cm = to_int(n, "n"), cn = to_int(m, "m"), ck = to_int(k, "k");
  const int clda = to_int(ldb, "ldb"), cldb = to_int(lda, "lda"), cldc = to_int(ldc, "ldc");
  const int cbatch = to_int(batch, "batch");
  const float falpha = static_cast<float>(alpha), fbeta = static_cast<float>(beta);
  // TF32 only when the user allowed it (off by default: FP32 results match the CPU).
  const cublasComputeType_t compute =
      backend_options().allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // Column-major call: C^T (n x m) = op(B)^T (n x k) * op(A)^T (k x m).
  auto call = [&](int64_t first, int count) {
    IPSNET_CUDA_CHECK(cublasGemmStridedBatchedEx(
        ctx.cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, cm, cn, ck, &falpha,
        b.data<float>() + first * stride_b, CUDA_R_32F, clda, static_cast<long long>(stride_b),
        a.data<float>() + first * stride_a, CUDA_R_32F, cldb, static_cast<long long>(stride_a), &fbeta,
        c.data<float>() + first * stride_c, CUDA_R_32F, cldc, static_cast<long long>(stride_c), count, compute,
        CUBLAS_GEMM_DEFAULT));
  };
  if (!overlapping_c) {
    call(0, cbatch);
  } else {
    for (int64_t i = 0; i < batch; ++i) call(i, 1);  // in order, each after the last (one stream)
  }
}

void CudaBackend::gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const Tensor& a,
                            int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb, int64_t stride_b,
                            const Tensor& c, int64_t ldc, int64_t stride_c, int64_t batch) {
  const int dev = common_device("gemm_bf16", {&a, &b, &c});
  require_float32("gemm_bf16", a);
  require_float32("gemm_bf16", b);
  require_float32("gemm_bf16", c);
  IPSNET_CHECK(supports_bf16_gemm(),
               "gemm_bf16: needs CUDA devices of compute capability 8.0 or newer (bfloat16 tensor cores)");
  if (m == 0 || n == 0 || batch == 0) return;
  if (k == 0) {  // empty reduction: the float32 gemm writes the zeros
    gemm(trans_a, trans_b, m, n, k, 1.0, a, lda, stride_a, b, ldb, stride_b, 0.0, c, ldc, stride_c, batch);
    return;
  }
  IPSNET_CHECK(stride_a >= 0 && stride_b >= 0 && stride_c >= 0, "gemm_bf16: batch strides ", stride_a, ", ",
               stride_b, ", ", stride_c, " must not be negative");
  DeviceGuard guard(dev);
  CudaContext& ctx = context(dev);
  lda = fix_ld(lda, trans_a ? k : m, trans_a ? m : k);
  ldb = fix_ld(ldb, trans_b ? n : k, trans_b ? k : n);
  ldc = fix_ld(ldc, m, n);
  IPSNET_CHECK(lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n, "gemm_bf16: leading dimensions lda ",
               lda, ", ldb ", ldb, ", ldc ", ldc, " too small for m ", m, ", n ", n, ", k ", k,
               trans_a ? " (A transposed)" : "", trans_b ? " (B transposed)" : "");
  const bool overlapping_c = batch > 1 && stride_c < (m - 1) * ldc + n;
  // The stored matrices (rows x cols, row stride ld) rounded into dense
  // bfloat16 copies: row stride cols, batch stride rows * cols (0: shared).
  const int64_t ra = trans_a ? k : m, ca = trans_a ? m : k;
  const int64_t rb = trans_b ? n : k, cb = trans_b ? k : n;
  const int64_t ba = stride_a == 0 ? 1 : batch, bb = stride_b == 0 ? 1 : batch;
  ScopedDeviceBuffer abf = bf16_copy(ctx, a.data<float>(), ba, ra, ca, lda, stride_a);
  ScopedDeviceBuffer bbf = bf16_copy(ctx, b.data<float>(), bb, rb, cb, ldb, stride_b);
  const int64_t sa = stride_a == 0 ? 0 : ra * ca, sb = stride_b == 0 ? 0 : rb * cb;
  const int cm = to_int(n, "n"), cn = to_int(m, "m"), ck = to_int(k, "k");
  const int clda = to_int(cb, "dense ldb"), cldb = to_int(ca, "dense lda"), cldc = to_int(ldc, "ldc");
  const int cbatch = to_int(batch, "batch");
  const float one = 1.0f, zero = 0.0f;
  const auto* abase = static_cast<const uint16_t*>(abf.data());
  const auto* bbase = static_cast<const uint16_t*>(bbf.data());
  // Column-major call: C^T (n x m) = op(B)^T (n x k) * op(A)^T (k x m).
  auto call = [&](int64_t first, int count) {
    IPSNET_CUDA_CHECK(cublasGemmStridedBatchedEx(
        ctx.cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, cm, cn, ck, &one,
        bbase + first * sb, CUDA_R_16BF, clda, static_cast<long long>(sb), abase + first * sa, CUDA_R_16BF, cldb,
        static_cast<long long>(sa), &zero, c.data<float>() + first * stride_c, CUDA_R_32F, cldc,
        static_cast<long long>(stride_c), count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  if (!overlapping_c) {
    call(0, cbatch);
  } else {
    for (int64_t i = 0; i < batch; ++i) call(i, 1);  // in stream order, as gemm does
  }
}

}  // namespace cuda
}  // namespace ipsnet
