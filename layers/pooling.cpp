// MaxPool2d and AdaptiveAvgPool2d (need the engine's pooling ops).
#include "layers/basic.h"

namespace ipsnet {

Tensor MaxPool2d::forward(const Tensor& x) {
  return ops::max_pool2d(x, options_.kernel_size(), options_.stride(), options_.padding());
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  Tensor y = ops::adaptive_avg_pool2d_1x1(x);
  return flatten_ ? y.flatten(1) : y;
}

}  // namespace ipsnet
