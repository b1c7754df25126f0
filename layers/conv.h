// Conv2d (NCHW input, OIHW weight).
#pragma once
#include "layers/module.h"

namespace ipsnet {

struct Conv2dOptions {
  Conv2dOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_({kernel_size, kernel_size}) {}
  Conv2dOptions(int64_t in_channels, int64_t out_channels, ops::Pair kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  IPSNET_ARG(int64_t, in_channels);
  IPSNET_ARG(int64_t, out_channels);
  IPSNET_ARG(ops::Pair, kernel_size);
  IPSNET_ARG(ops::Pair, stride) = ops::Pair{1, 1};
  IPSNET_ARG(ops::Pair, padding) = ops::Pair{0, 0};
  IPSNET_ARG(ops::Pair, dilation) = ops::Pair{1, 1};
  IPSNET_ARG(bool, bias) = true;
  IPSNET_ARG(DType, dtype) = DType::Float32;

 public:
  /// Square-argument conveniences.
  Conv2dOptions& stride(int64_t s) { return stride(ops::Pair{s, s}); }
  Conv2dOptions& padding(int64_t p) { return padding(ops::Pair{p, p}); }
  Conv2dOptions& dilation(int64_t d) { return dilation(ops::Pair{d, d}); }
};

/// PyTorch's nn.Conv2d (groups = 1). Parameters `weight` (O, I, kh, kw) and
/// optional `bias` (O); PyTorch's default init (kaiming_uniform(a=sqrt(5)) =
/// U(+-1/sqrt(fan_in)) for the weight, U(+-1/sqrt(fan_in)) for the bias).
class Conv2d : public Module {
 public:
  Conv2d(const Conv2dOptions& options, Generator& gen);
  /// x: (N, I, H, W) -> (N, O, Ho, Wo)
  Tensor forward(const Tensor& x) override;
  const Conv2dOptions& options() const { return options_; }
  Tensor weight_;  // (O, I, kh, kw)
  Tensor bias_;    // (O) or undefined

 private:
  Conv2dOptions options_;
};

}  // namespace ipsnet
