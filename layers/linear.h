// Linear: y = x W^T + b.
#pragma once
#include "layers/module.h"

namespace ipsnet {

struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  IPSNET_ARG(int64_t, in_features);
  IPSNET_ARG(int64_t, out_features);
  IPSNET_ARG(bool, bias) = true;
  IPSNET_ARG(DType, dtype) = DType::Float32;
};

/// PyTorch's nn.Linear. Parameters `weight` (out, in) and, with bias, `bias`
/// (out). Init as PyTorch: weight kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in),
/// 1/sqrt(in)), bias U(-1/sqrt(in), 1/sqrt(in)), drawn from `gen` (weight first).
class Linear : public Module {
 public:
  Linear(const LinearOptions& options, Generator& gen);
  /// x: (..., in) -> (..., out)
  Tensor forward(const Tensor& x) override;
  const LinearOptions& options() const { return options_; }
  Tensor weight_;  // (out, in)
  Tensor bias_;    // (out) or undefined

 private:
  LinearOptions options_;
};

}  // namespace ipsnet
