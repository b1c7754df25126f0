#include "layers/conv.h"

#include <cmath>

#include "layers/init.h"

namespace ipsnet {

Conv2d::Conv2d(const Conv2dOptions& o, Generator& gen) : Module("Conv2d"), options_(o) {
  IPSNET_CHECK(o.in_channels() > 0 && o.out_channels() > 0 && o.kernel_size()[0] > 0 && o.kernel_size()[1] > 0,
               "Conv2d: channels and kernel size must be positive, got in ", o.in_channels(), " out ",
               o.out_channels(), " kernel ", o.kernel_size()[0], "x", o.kernel_size()[1]);
  Shape ws{o.out_channels(), o.in_channels(), o.kernel_size()[0], o.kernel_size()[1]};
  weight_ = register_parameter("weight", init::kaiming_uniform(ws, gen, std::sqrt(5.0), o.dtype()));
  if (o.bias()) {
    double bound = 1.0 / std::sqrt(static_cast<double>(init::fans(ws).first));
    bias_ = register_parameter("bias", init::uniform({o.out_channels()}, gen, -bound, bound, o.dtype()));
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  return ops::conv2d(x, weight_, bias_, options_.stride(), options_.padding(), options_.dilation());
}

}  // namespace ipsnet
