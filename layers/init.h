// Parameter initialisers (PyTorch's torch.nn.init), drawing from a seeded
// Generator so that a model is a deterministic function of its seed.
#pragma once
#include "engine/engine.h"

namespace ipsnet {
namespace init {

/// fan_in and fan_out of a weight: Linear (out, in); Conv (O, I, kh, kw)
/// gives fan_in = I*kh*kw, fan_out = O*kh*kw.
std::pair<int64_t, int64_t> fans(const Shape& weight_shape);

/// U(lo, hi) of the given shape.
Tensor uniform(const Shape& shape, Generator& gen, double lo, double hi, DType dtype = DType::Float32);
/// N(mean, std^2) of the given shape.
Tensor normal(const Shape& shape, Generator& gen, double mean, double std, DType dtype = DType::Float32);
/// kaiming_uniform_(w, a, mode=fan_in, leaky_relu): U(-b, b), b = sqrt(3) * sqrt(2/(1+a^2)) / sqrt(fan_in).
/// With a = sqrt(5) (PyTorch's Linear/Conv default) b = 1/sqrt(fan_in).
Tensor kaiming_uniform(const Shape& shape, Generator& gen, double a, DType dtype = DType::Float32);
/// kaiming_normal_(w, mode=fan_out, nonlinearity=relu): N(0, 2/fan_out) (torchvision ResNet convs).
Tensor kaiming_normal_fan_out(const Shape& shape, Generator& gen, DType dtype = DType::Float32);

}  // namespace init
}  // namespace ipsnet
