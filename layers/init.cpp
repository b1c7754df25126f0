#include "layers/init.h"

#include <cmath>

namespace ipsnet {
namespace init {

std::pair<int64_t, int64_t> fans(const Shape& s) {
  IPSNET_CHECK(s.size() >= 2, "init::fans: weight needs at least 2 dims, got ", shape_str(s));
  int64_t receptive = 1;
  for (size_t i = 2; i < s.size(); ++i) receptive *= s[i];
  return {s[1] * receptive, s[0] * receptive};
}

Tensor uniform(const Shape& shape, Generator& gen, double lo, double hi, DType dtype) {
  return Tensor::rand(shape, gen, lo, hi, dtype);
}

Tensor normal(const Shape& shape, Generator& gen, double mean, double std, DType dtype) {
  return Tensor::randn(shape, gen, mean, std, dtype);
}

Tensor kaiming_uniform(const Shape& shape, Generator& gen, double a, DType dtype) {
  int64_t fan_in = fans(shape).first;
  IPSNET_CHECK(fan_in > 0, "kaiming_uniform: zero fan_in for shape ", shape_str(shape));
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  double bound = std::sqrt(3.0) * gain / std::sqrt(static_cast<double>(fan_in));
  return uniform(shape, gen, -bound, bound, dtype);
}

Tensor kaiming_normal_fan_out(const Shape& shape, Generator& gen, DType dtype) {
  int64_t fan_out = fans(shape).second;
  IPSNET_CHECK(fan_out > 0, "kaiming_normal: zero fan_out for shape ", shape_str(shape));
  return normal(shape, gen, 0.0, std::sqrt(2.0 / static_cast<double>(fan_out)), dtype);
}

}  // namespace init
}  // namespace ipsnet
