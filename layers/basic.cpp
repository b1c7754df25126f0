#include "layers/basic.h"

namespace ipsnet {

Dropout::Dropout(const DropoutOptions& o, Generator* gen)
    : Module("Dropout"), options_(o), gen_(gen), own_gen_(o.seed(), o.stream()) {
  IPSNET_CHECK(o.p() >= 0.0 && o.p() <= 1.0, "Dropout: p must be in [0, 1], got ", o.p());
}

Tensor Dropout::forward(const Tensor& x) { return ops::dropout(x, options_.p(), training_, generator()); }

LayerNorm::LayerNorm(const LayerNormOptions& o) : Module("LayerNorm"), options_(o) {
  IPSNET_CHECK(o.normalized_shape() > 0, "LayerNorm: normalized_shape must be positive, got ",
               o.normalized_shape());
  if (o.elementwise_affine()) {
    weight_ = register_parameter("weight", Tensor::ones({o.normalized_shape()}, o.dtype()));
    bias_ = register_parameter("bias", Tensor::zeros({o.normalized_shape()}, o.dtype()));
  }
}

Tensor LayerNorm::forward(const Tensor& x) {
  check_defined(x, "LayerNorm", "x");
  IPSNET_CHECK(x.dim() >= 1 && x.size(-1) == options_.normalized_shape(), "LayerNorm: input ",
               shape_str(x.shape()), " vs normalized_shape ", options_.normalized_shape(), ": last dim differs");
  return ops::layer_norm(x, weight_, bias_, options_.eps());
}

}  // namespace ipsnet
