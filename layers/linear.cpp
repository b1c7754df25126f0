#include "layers/linear.h"

#include <cmath>

#include "layers/init.h"

namespace ipsnet {

Linear::Linear(const LinearOptions& o, Generator& gen) : Module("Linear"), options_(o) {
  IPSNET_CHECK(o.in_features() > 0 && o.out_features() > 0, "Linear: features must be positive, got in ",
               o.in_features(), " out ", o.out_features());
  weight_ = register_parameter(
      "weight", init::kaiming_uniform({o.out_features(), o.in_features()}, gen, std::sqrt(5.0), o.dtype()));
  if (o.bias()) {
    double bound = 1.0 / std::sqrt(static_cast<double>(o.in_features()));
    bias_ = register_parameter("bias", init::uniform({o.out_features()}, gen, -bound, bound, o.dtype()));
  }
}

Tensor Linear::forward(const Tensor& x) { return ops::linear(x, weight_, bias_); }

}  // namespace ipsnet
