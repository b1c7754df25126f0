// Parameter-free and simple layers: ReLU, Identity, Dropout, MaxPool2d,
// AdaptiveAvgPool2d (to 1x1), LayerNorm.
#pragma once
#include <memory>

#include "layers/module.h"

namespace ipsnet {

/// max(x, 0), any shape.
class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  /// x: any shape -> same shape
  Tensor forward(const Tensor& x) override { return ops::relu(x); }
};

/// Returns its input.
class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  /// x: any shape -> x
  Tensor forward(const Tensor& x) override { return x; }
};

struct DropoutOptions {
  explicit DropoutOptions(double p = 0.5) : p_(p) {}
  IPSNET_ARG(double, p);
  /// Seed of the module-owned generator (used when no generator is supplied).
  IPSNET_ARG(uint64_t, seed) = 0;
  /// Philox stream of the module-owned generator (distinct streams keep
  /// several dropouts with one seed independent).
  IPSNET_ARG(uint64_t, stream) = 0;
};

/// Inverted dropout (PyTorch's nn.Dropout): in training, zero each element
/// with probability p and scale the rest by 1/(1-p); identity in eval mode.
/// Draws from the generator given at construction (which must outlive the
/// module) or, with none, from a module-owned Generator(seed).
class Dropout : public Module {
 public:
  explicit Dropout(const DropoutOptions& options = DropoutOptions(), Generator* gen = nullptr);
  /// x: any shape -> same shape
  Tensor forward(const Tensor& x) override;
  const DropoutOptions& options() const { return options_; }
  /// Uses `gen` from now on (nullptr: the module-owned one).
  void set_generator(Generator* gen) { gen_ = gen; }
  Generator& generator() { return gen_ ? *gen_ : own_gen_; }

 private:
  DropoutOptions options_;
  Generator* gen_;
  Generator own_gen_;
};

struct MaxPool2dOptions {
  explicit MaxPool2dOptions(int64_t kernel_size) : kernel_size_({kernel_size, kernel_size}), stride_({kernel_size, kernel_size}) {}
  IPSNET_ARG(ops::Pair, kernel_size);
  /// Defaults to kernel_size, as in PyTorch.
  IPSNET_ARG(ops::Pair, stride);
  IPSNET_ARG(ops::Pair, padding) = ops::Pair{0, 0};

 public:
  MaxPool2dOptions& stride(int64_t s) { return stride(ops::Pair{s, s}); }
  MaxPool2dOptions& padding(int64_t p) { return padding(ops::Pair{p, p}); }
};

/// PyTorch's nn.MaxPool2d (dilation 1, floor mode).
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const MaxPool2dOptions& options) : Module("MaxPool2d"), options_(options) {}
  /// x: (N, C, H, W) -> (N, C, Ho, Wo)
  Tensor forward(const Tensor& x) override;
  const MaxPool2dOptions& options() const { return options_; }

 private:
  MaxPool2dOptions options_;
};

/// PyTorch's nn.AdaptiveAvgPool2d((1, 1)); with `flatten` the output is (N, C).
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(bool flatten = false) : Module("AdaptiveAvgPool2d"), flatten_(flatten) {}
  /// x: (N, C, H, W) -> (N, C, 1, 1), or (N, C) with flatten
  Tensor forward(const Tensor& x) override;

 private:
  bool flatten_;
};

struct LayerNormOptions {
  explicit LayerNormOptions(int64_t normalized_shape) : normalized_shape_(normalized_shape) {}
  /// Size of the last dim (the only normalised one).
  IPSNET_ARG(int64_t, normalized_shape);
  IPSNET_ARG(double, eps) = 1e-5;
  IPSNET_ARG(bool, elementwise_affine) = true;
  IPSNET_ARG(DType, dtype) = DType::Float32;
};

/// PyTorch's nn.LayerNorm over the last dim: `weight` (n) = 1, `bias` (n) = 0
/// when elementwise_affine.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(const LayerNormOptions& options);
  /// x: (..., n) -> (..., n)
  Tensor forward(const Tensor& x) override;
  const LayerNormOptions& options() const { return options_; }
  Tensor weight_;  // (n) or undefined
  Tensor bias_;    // (n) or undefined

 private:
  LayerNormOptions options_;
};

}  // namespace ipsnet
