// The differentiable functional API. Every op checks its arguments (both
// shapes and the op's name in the message), calls the backend of the inputs'
// device, and, when grad mode is on and an input requires grad, records a
// backward node that saves only what its backward needs.
#pragma once
#include <array>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/tensor/tensor.h"

namespace ipsnet {

class Generator;

namespace ops {

// ---- elementwise (broadcasting) --------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor rsub(const Tensor& a, double s);  // s - a
Tensor pow(const Tensor& a, double e);
Tensor neg(const Tensor& x);
Tensor square(const Tensor& x);
Tensor reciprocal(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor clamp_min(const Tensor& x, double lo);
/// Comparisons give 0/1 in the inputs' dtype and carry no gradient.
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
/// out = mask != 0 ? value : x, mask broadcast to x's shape (any dtype).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// ---- in place (not differentiable; error on a tensor that requires grad) ----
void add_(const Tensor& a, const Tensor& b);  // a += b (b broadcast to a)
void mul_(const Tensor& a, double s);         // a *= s

// ---- reductions -------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements -> shape ()
Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim = false);
/// Max along dim: values and int64 indices (ties: lowest index).
std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false);
std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim = false);
/// Max over several dims (values only).
Tensor amax(const Tensor& x, std::vector<int64_t> dims, bool keepdim = false);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
/// Sums x down to `shape` (the reverse of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- linear algebra ---------------------------------------------------------
/// (..., m, k) @ (..., k, n) with broadcast batch dims; 1-D operands as in numpy.
Tensor matmul(const Tensor& a, const Tensor& b);
/// x (..., in) W (out, in) b (out) -> (..., out)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- normalisation ----------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
/// Over the last dim; gamma/beta (n) optional.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);

// ---- shape and indexing -----------------------------------------------------
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);
/// out[..., j, ...] = x[..., index[..., j, ...], ...] along dim. index: int64 with
/// x's shape except along dim (expand it to get there).
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
/// self + src scattered along dim at index (same shape rules as gather).
Tensor scatter_add(const Tensor& self, int64_t dim, const Tensor& index, const Tensor& src);
/// index: 1-D int64.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
/// k largest (or smallest) along dim, sorted; ties broken by the lower index.
std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);

// ---- random -----------------------------------------------------------------
/// Inverted dropout: keep with prob 1-p, scale by 1/(1-p). Identity when !training.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- losses (mean over the batch) -------------------------------------------
/// logits (N, C), target int64 (N)
Tensor cross_entropy(const Tensor& logits, const Tensor& target);
/// log-probabilities (N, C), target int64 (N)
Tensor nll_loss(const Tensor& logp, const Tensor& target);
/// logits and targets of one shape; stable max(x,0) - x z + log(1 + e^-|x|)
Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target);

// ---- convolution, normalisation, pooling (engine/ops/conv.cpp) --------------
// Layout NCHW, weights OIHW (as PyTorch stores them). Fast path: oneDNN on the
// CPU (float32), cuDNN on CUDA; float64 runs the reference path (im2col + GEMM).
using Pair = std::array<int64_t, 2>;
/// x (N, C, H, W), weight (O, C, kh, kw), bias (O) optional -> (N, O, Ho, Wo)
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Pair stride = {1, 1},
              Pair padding = {0, 0}, Pair dilation = {1, 1});
/// x (N, C) or (N, C, ...). Training: batch statistics, running stats updated in
/// place (momentum, unbiased variance), PyTorch semantics. Eval: running stats.
/// gamma/beta (C) optional.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps);
/// relu(batch_norm(...)) in one op that saves only x (and the statistics):
/// backward recomputes the ReLU mask from x. With recompute, the output also
/// carries a recipe (set_recompute), so an op that saves it for backward (the
/// next convolution) keeps nothing: backward recomputes it from x, bit for bit.
Tensor batch_norm_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                       const Tensor& running_var, bool training, double momentum, double eps, bool recompute);
/// conv2d whose output carries a recipe (set_recompute): ops that save it
/// keep nothing and backward runs the convolution again (cheap for a
/// 1-channel stem, where the output is 64 times the input).
Tensor conv2d_recomputed(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), Pair stride = {1, 1},
                         Pair padding = {0, 0}, Pair dilation = {1, 1});
/// max_pool2d(relu(batch_norm(conv2d(x, weight, no bias)))) -- the ResNet
/// stem -- as one op that works through the batch `chunk` images at a time
/// (engine/ops/stem.cpp): no conv-sized map exists for more than one chunk,
/// in forward or backward; it saves x, the weight and the statistics and
/// recomputes the rest. training: batch statistics (running stats updated in
/// place, PyTorch's formula); else the running ones. Convolutions in bfloat16
/// under PrecisionGuard, as conv2d.
Tensor conv_bn_relu_pool(const Tensor& x, const Tensor& weight, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, bool training, double momentum,
                         double eps, Pair conv_stride, Pair conv_padding, Pair pool_kernel, Pair pool_stride,
                         Pair pool_padding, int64_t chunk);
/// x (N, C, H, W) -> max over kernel windows (padding counts as -inf).
Tensor max_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding = {0, 0});
/// x (N, C, H, W) -> (N, C, 1, 1) mean over H, W.
Tensor adaptive_avg_pool2d_1x1(const Tensor& x);

// ---- internal helpers shared by ops -----------------------------------------
/// Throws when tensors differ in device or dtype, naming op and both.
void check_same(const Tensor& a, const Tensor& b, const char* op);
/// outer/inner sizes around dim.
void dim_split(const Shape& s, int64_t dim, int64_t* outer, int64_t* n, int64_t* inner);
/// conv2d's and max_pool2d's argument checks and geometry (bf16 left off).
Conv2dGeometry conv2d_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair stride,
                               Pair padding, Pair dilation);
Pool2dGeometry max_pool2d_geometry(const Tensor& x, Pair kernel, Pair stride, Pair padding);

}  // namespace ops

// Operators
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator*(double s, const Tensor& a);
Tensor operator-(const Tensor& a);

}  // namespace ipsnet
