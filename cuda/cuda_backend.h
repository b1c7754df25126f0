// The CUDA backend: the engine's Backend interface on NVIDIA GPUs.
// Host-side logic only (checks, layout, dispatch); kernels in kernels/*.cu,
// GEMM through cuBLAS (cublas/gemm.cpp), convolution through cuDNN
// (cudnn/conv.cpp). Supported dtypes: float32 for math, float32 and int64 for
// copies, fills, comparisons, indexing and reductions; float64 tensors may
// live on the device and be copied, but their math is CPU-only (the gradient
// checks run there).
#pragma once
#include <initializer_list>

#include "cuda/context.h"
#include "engine/backend/backend.h"

namespace ipsnet {
namespace cuda {

class CudaBackend : public Backend {
 public:
  std::string name() const override { return "cuda"; }
  void synchronize() override;

  void copy(const Tensor& src, const Tensor& dst) override;
  void copy_across(const Tensor& src, const Tensor& dst) override;
  void fill(const Tensor& dst, double value) override;
  void unary(math::UnaryOp op, const Tensor& x, const Tensor& y, double alpha) override;
  void unary_backward(math::UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy,
                      const Tensor& dx, double alpha) override;
  void binary(math::BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void masked_fill(const Tensor& x, const Tensor& mask, double value, const Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
              const Tensor& out, const Tensor& argidx) override;
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
            const Tensor& a, int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb,
            int64_t stride_b, double beta, const Tensor& c, int64_t ldc, int64_t stride_c,
            int64_t batch) override;
  // Mixed precision (cublas/gemm.cpp, cudnn/conv.cpp): where every visible
  // device has compute capability 8.0 or newer (bfloat16 tensor cores).
  bool supports_bf16_gemm() const override;
  void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const Tensor& a, int64_t lda,
                 int64_t stride_a, const Tensor& b, int64_t ldb, int64_t stride_b, const Tensor& c, int64_t ldc,
                 int64_t stride_c, int64_t batch) override;
  bool supports_bf16_conv() const override;
  void softmax(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner,
               bool log) override;
  void softmax_backward(const Tensor& y, const Tensor& dy, const Tensor& dx, int64_t outer,
                        int64_t n, int64_t inner, bool log) override;
  void layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                  const Tensor& mean, const Tensor& rstd, int64_t rows, int64_t n,
                  double eps) override;
  void layer_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy,
                           const Tensor& mean, const Tensor& rstd, const Tensor& dx,
                           const Tensor& dgamma, const Tensor& dbeta, int64_t rows,
                           int64_t n) override;
  void gather(const Tensor& x, const Tensor& index, const Tensor& out, int64_t outer, int64_t n,
              int64_t k, int64_t inner) override;
  void scatter_add(const Tensor& src, const Tensor& index, const Tensor& out, int64_t outer,
                   int64_t n, int64_t k, int64_t inner) override;
  void index_select(const Tensor& x, const Tensor& index, const Tensor& out, int64_t outer,
                    int64_t n, int64_t k, int64_t inner) override;
  void index_add(const Tensor& src, const Tensor& index, const Tensor& out, int64_t outer,
                 int64_t n, int64_t k, int64_t inner) override;
  void topk(const Tensor& x, const Tensor& values, const Tensor& indices, int64_t rows, int64_t n,
            int64_t k, bool largest) override;
  void dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t stream,
                    uint64_t offset) override;
  void adamw(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, double lr,
             double beta1, double beta2, double eps, double weight_decay, int64_t step) override;

  void cut_patches(const Tensor& image, const Tensor& index, const Tensor& out, int64_t ph, int64_t pw,
                   int64_t sh, int64_t sw) override;

  // cudnn/conv.cpp
  void conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& y,
                      const Conv2dGeometry& g) override;
  void conv2d_backward_data(const Tensor& dy, const Tensor& weight, const Tensor& dx,
                            const Conv2dGeometry& g) override;
  void conv2d_backward_weight(const Tensor& x, const Tensor& dy, const Tensor& dweight,
                              const Tensor& dbias, const Conv2dGeometry& g) override;
  // own kernels (kernels/norm_pool.cu)
  void batch_norm_forward_training(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   const Tensor& y, const Tensor& save_mean, const Tensor& save_rstd,
                                   const Tensor& running_mean, const Tensor& running_var,
                                   const BatchNormGeometry& g, double momentum, double eps) override;
  void batch_norm_forward_inference(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                    const Tensor& mean, const Tensor& var, const Tensor& y,
                                    const BatchNormGeometry& g, double eps) override;
  void batch_norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& dy,
                           const Tensor& save_mean, const Tensor& save_rstd, const Tensor& dx,
                           const Tensor& dgamma, const Tensor& dbeta, const BatchNormGeometry& g,
                           bool stats_are_constant, double eps) override;
  void max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& indices,
                          const Pool2dGeometry& g) override;
  void max_pool2d_backward(const Tensor& dy, const Tensor& indices, const Tensor& dx,
                           const Pool2dGeometry& g) override;
  void avg_pool2d_global_forward(const Tensor& x, const Tensor& y, int64_t planes, int64_t hw) override;
  void avg_pool2d_global_backward(const Tensor& dy, const Tensor& dx, int64_t planes, int64_t hw) override;
};

/// The one CUDA backend object (registered with the engine at start-up).
CudaBackend& cuda_backend();

/// Throws unless every defined tensor is on a CUDA device (the same one);
/// returns the device index.
int common_device(const char* op, std::initializer_list<const Tensor*> ts);
void require_float32(const char* op, const Tensor& t);
/// Whether every usable device has compute capability >= 8.0 (bfloat16
/// tensor cores in cuBLAS and cuDNN); false without a device. Read once.
bool devices_support_bf16();

}  // namespace cuda
}  // namespace ipsnet
