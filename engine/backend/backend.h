// The backend interface: the primitives every device implements, forward and
// backward side by side. Ops (engine/ops) check shapes, lay out inputs as the
// primitive expects, and call these. Outputs are preallocated by the caller.
//
// Layout conventions:
//  - "contiguous" arguments are row-major dense; the op guarantees it.
//  - (outer, n, inner): a tensor viewed as outer x n x inner around one dim.
//  - Broadcast inputs arrive as strided views expanded to the output shape
//    (stride 0 on broadcast dims); outputs are contiguous unless noted.
// Accumulate rule: primitives write (=) their outputs; only the ones named
// *_add or taking beta accumulate.
#pragma once
#include <cstdint>
#include <string>

#include "engine/backend/geometry.h"
#include "engine/math/elementwise.h"
#include "engine/tensor/tensor.h"

namespace ipsnet {

enum class ReduceOp { Sum, Mean, Max, Min };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  /// Waits for queued work (no-op on the CPU).
  virtual void synchronize() {}

  // ---- memory -----------------------------------------------------------
  /// dst[...] = src[...]: same shape, any strides, dtype conversion allowed.
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  /// Copies between devices (contiguous, same dtype and numel).
  virtual void copy_across(const Tensor& src, const Tensor& dst) = 0;
  virtual void fill(const Tensor& dst, double value) = 0;

  // ---- elementwise --------------------------------------------------------
  /// y = op(x; alpha), x and y contiguous (y may alias x).
  virtual void unary(math::UnaryOp op, const Tensor& x, const Tensor& y, double alpha) = 0;
  /// dx = dy * op'(x or y; alpha)   (x or y may be undefined when not used)
  virtual void unary_backward(math::UnaryOp op, const Tensor& x, const Tensor& y,
                              const Tensor& dy, const Tensor& dx, double alpha) = 0;
  /// out = op(a, b); a and b are strided views of out's shape.
  virtual void binary(math::BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  /// out = mask != 0 ? value : x; x and mask strided views of out's shape.
  virtual void masked_fill(const Tensor& x, const Tensor& mask, double value, const Tensor& out) = 0;

  // ---- reductions ---------------------------------------------------------
  /// x contiguous (outer, n, inner) -> out (outer, inner); for Max/Min the
  /// position along n goes to argidx (int64, may be undefined). Ties: lower index.
  virtual void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                      const Tensor& out, const Tensor& argidx) = 0;

  // ---- linear algebra -----------------------------------------------------
  /// Row-major C[b] = alpha op(A[b]) op(B[b]) + beta C[b] for b < batch, where
  /// op(A) is (m, k), op(B) is (k, n); lda/ldb/ldc are row strides of the
  /// stored matrices, stride_* the element distance between batch items.
  virtual void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                    const Tensor& a, int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb,
                    int64_t stride_b, double beta, const Tensor& c, int64_t ldc, int64_t stride_c,
                    int64_t batch) = 0;
  /// Mixed precision (config key 'precision: bf16'): the same product of
  /// float32 operands, each rounded to bfloat16, accumulated and written in
  /// float32; alpha = 1 and beta = 0 only. Where supports_bf16_gemm().
  virtual bool supports_bf16_gemm() const { return false; }
  virtual void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const Tensor& a,
                         int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb, int64_t stride_b,
                         const Tensor& c, int64_t ldc, int64_t stride_c, int64_t batch) {
    (void)trans_a, (void)trans_b, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)stride_a;
    (void)b, (void)ldb, (void)stride_b, (void)c, (void)ldc, (void)stride_c, (void)batch;
    unsupported("gemm_bf16");
  }

  // ---- softmax / layer norm ---------------------------------------------
  /// Along n of contiguous (outer, n, inner).
  virtual void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner,
                       bool log) = 0;
  virtual void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, int64_t outer,
                                int64_t n, int64_t inner, bool log) = 0;
  /// Rows of n; gamma/beta (n) optional; mean/rstd (rows) written for backward.
  virtual void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& y, const Tensor& mean, const Tensor& rstd, int64_t rows,
                          int64_t n, double eps) = 0;
  /// dx (=), dgamma/dbeta (=, may be undefined).
  virtual void layer_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy,
                                   const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                                   const Tensor& dgamma, const Tensor& dbeta, int64_t rows,
                                   int64_t n) = 0;

  // ---- indexing -----------------------------------------------------------
  /// out(o, j, i) = x(o, index(o, j, i), i); x (outer, n, inner), index/out (outer, k, inner).
  /// Throws on an index outside [0, n).
  virtual void gather(const Tensor& x, const Tensor& index, const Tensor& out, int64_t outer,
                      int64_t n, int64_t k, int64_t inner) = 0;
  /// out(o, index(o, j, i), i) += src(o, j, i)   (accumulates into out)
  virtual void scatter_add(const Tensor& src, const Tensor& index, const Tensor& out,
                           int64_t outer, int64_t n, int64_t k, int64_t inner) = 0;
  /// out(o, j, i) = x(o, index(j), i); index (k)
  virtual void index_select(const Tensor& x, const Tensor& index, const Tensor& out,
                            int64_t outer, int64_t n, int64_t k, int64_t inner) = 0;
  /// out(o, index(j), i) += src(o, j, i)
  virtual void index_add(const Tensor& src, const Tensor& index, const Tensor& out, int64_t outer,
                         int64_t n, int64_t k, int64_t inner) = 0;
  /// Per contiguous row of n: the k largest (or smallest), sorted, ties by lower index.
  virtual void topk(const Tensor& x, const Tensor& values, const Tensor& indices, int64_t rows,
                    int64_t n, int64_t k, bool largest) = 0;

  // ---- random -------------------------------------------------------------
  /// mask[i] = u(seed, stream, offset + i) >= p ? 1/(1-p) : 0 (Philox counter stream).
  virtual void dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t stream,
                            uint64_t offset) = 0;

  // ---- patches ------------------------------------------------------------
  /// out (B, K, C, ph, pw) = patches index (B, K) (int64 ids in the row-major
  /// grid of stride (sh, sw), engine/math/patches.h) of image (B, C, H, W), all
  /// contiguous and on this backend's device. Throws on an id outside the grid.
  /// The base implementation is the CPU loop (engine/backend/cpu/cpu_patches.cpp).
  virtual void cut_patches(const Tensor& image, const Tensor& index, const Tensor& out, int64_t ph,
                           int64_t pw, int64_t sh, int64_t sw);

  // ---- optimizer ----------------------------------------------------------
  /// One fused AdamW update of contiguous p, g, m, v (engine/math/rows.h).
  virtual void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     int64_t step) = 0;

  // ---- convolution, batch norm, pooling (engine/ops/conv.cpp) --------------
  // NCHW activations, OIHW weights, all contiguous; geometry from
  // engine/backend/geometry.h. Vendor libraries behind these: oneDNN on the
  // CPU (float32; float64 runs the reference loops), cuDNN on CUDA. Outputs
  // are written (=); parameter gradients are written too (the autograd
  // AccumulateGrad node does the +=).
  // Not pure: a backend that lacks them (a CUDA backend being written) still
  // compiles and throws a clear error when one is called.

  /// y = conv(x, weight) + bias. x (N, C, H, W), weight (O, C, kh, kw),
  /// bias (O) or undefined, y (N, O, ho, wo).
  /// Whether conv2d_forward and both conv2d backwards honour
  /// Conv2dGeometry::bf16 (else they run float32).
  virtual bool supports_bf16_conv() const { return false; }
  virtual void conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias,
                              const Tensor& y, const Conv2dGeometry& g) {
    unsupported("conv2d_forward");
  }
  /// dx = conv_transpose(dy, weight). dy (N, O, ho, wo), weight (O, C, kh, kw), dx (N, C, H, W).
  virtual void conv2d_backward_data(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                                    const Conv2dGeometry& g) {
    unsupported("conv2d_backward_data");
  }
  /// dweight = sum_n dy[n] (x) x[n]; dbias = sum over (N, ho, wo) of dy (undefined: skipped).
  /// x (N, C, H, W), dy (N, O, ho, wo), dweight (O, C, kh, kw), dbias (O).
  /// With g.bf16, x may be a bfloat16 tensor (a saved bf16 copy, CPU): the
  /// primitive reads it as is, with no float32 widening.
  virtual void conv2d_backward_weight(const Tensor& x, const Tensor& dy, const Tensor& dweight,
                                      const Tensor& dbias, const Conv2dGeometry& g) {
    unsupported("conv2d_backward_weight");
  }

  /// Training batch norm on x viewed as (N, C, S): per channel mean and biased
  /// var over N*S, y = (x - mean) * rstd * gamma + beta with rstd = 1/sqrt(var + eps).
  /// Writes save_mean, save_rstd (C). When running_mean/var (C) are defined they
  /// are updated in place: r = (1 - momentum) r + momentum * stat, with the
  /// unbiased variance (var * count / (count - 1)) for running_var.
  /// gamma/beta (C) may be undefined (1 and 0).
  virtual void batch_norm_forward_training(const Tensor& x, const Tensor& gamma,
                                           const Tensor& beta, const Tensor& y,
                                           const Tensor& save_mean, const Tensor& save_rstd,
                                           const Tensor& running_mean, const Tensor& running_var,
                                           const BatchNormGeometry& g, double momentum,
                                           double eps) {
    unsupported("batch_norm_forward_training");
  }
  /// Eval batch norm: y = (x - mean) / sqrt(var + eps) * gamma + beta with the
  /// given (running) mean and var (C).
  virtual void batch_norm_forward_inference(const Tensor& x, const Tensor& gamma,
                                            const Tensor& beta, const Tensor& mean,
                                            const Tensor& var, const Tensor& y,
                                            const BatchNormGeometry& g, double eps) {
    unsupported("batch_norm_forward_inference");
  }
  /// Backward of either forward, from the saved per-channel mean and rstd (C).
  /// With xh = (x - mean) rstd and g = dy * gamma:
  ///   dgamma = sum dy xh, dbeta = sum dy (undefined: skipped)
  ///   training (batch stats):  dx = rstd (g - mean(g) - xh mean(g xh))
  ///   stats_are_constant (eval): dx = rstd g
  /// x may be undefined when neither dx in training mode nor dgamma is wanted.
  /// dx may be undefined (only parameter gradients wanted).
  virtual void batch_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy,
                                   const Tensor& save_mean, const Tensor& save_rstd,
                                   const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                                   const BatchNormGeometry& g, bool stats_are_constant,
                                   double eps) {
    unsupported("batch_norm_backward");
  }

  /// Max pooling; padding counts as -inf. x (N, C, H, W) -> y (N, C, ho, wo).
  /// indices (int64, y's shape, may be undefined when no backward will run):
  /// the argmax as h * W + w within the (n, c) plane (PyTorch's convention;
  /// ties: first in row-major window order).
  virtual void max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& indices,
                                  const Pool2dGeometry& g) {
    unsupported("max_pool2d_forward");
  }
  /// dx = 0, then dx[plane, indices] += dy.
  virtual void max_pool2d_backward(const Tensor& dy, const Tensor& indices, const Tensor& dx,
                                   const Pool2dGeometry& g) {
    unsupported("max_pool2d_backward");
  }
  /// Mean over each (n, c) plane: x (N, C, H, W) -> y (N, C).
  virtual void avg_pool2d_global_forward(const Tensor& x, const Tensor& y, int64_t planes,
                                         int64_t hw) {
    unsupported("avg_pool2d_global_forward");
  }
  /// dx[p, i] = dy[p] / hw.
  virtual void avg_pool2d_global_backward(const Tensor& dy, const Tensor& dx, int64_t planes,
                                          int64_t hw) {
    unsupported("avg_pool2d_global_backward");
  }

 protected:
  [[noreturn]] void unsupported(const char* primitive) const {
    IPSNET_FAIL(primitive, ": not implemented by the ", name(), " backend");
  }
};

/// The backend that runs tensors of this device.
Backend& backend_for(Device d);
void register_backend(DeviceType type, Backend* b);
/// Global thread count for CPU loops and BLAS (default: OMP_NUM_THREADS or all cores).
void set_num_threads(int n);
int num_threads();

}  // namespace ipsnet
