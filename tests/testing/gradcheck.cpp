#include "tests/testing/gradcheck.h"

#include <cmath>
#include <sstream>

namespace ipsnet {
namespace testing {

Tensor rand_double(const Shape& shape, uint64_t seed, double lo, double hi) {
  Generator g(seed);
  return Tensor::rand(shape, g, lo, hi, DType::Float64);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to(DType::Float64).to_vector<double>();
  std::vector<double> vb = b.to(DType::Float64).to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol, double rtol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(a.shape()) << " vs "
                                         << shape_str(b.shape());
  std::vector<double> va = a.to(DType::Float64).to_vector<double>();
  std::vector<double> vb = b.to(DType::Float64).to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) != std::isnan(vb[i]) || std::fabs(va[i] - vb[i]) > atol + rtol * std::fabs(vb[i]))
      return ::testing::AssertionFailure() << "element " << i << ": " << va[i] << " vs " << vb[i]
                                           << " (max abs diff " << max_abs_diff(a, b) << ")";
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult gradcheck(const GradFn& f, std::vector<Tensor> inputs, const GradcheckOptions& opt) {
  for (auto& t : inputs) {
    if (!t.defined()) continue;
    if (t.dtype() != DType::Float64)
      return ::testing::AssertionFailure() << "gradcheck needs float64 inputs, got " << dtype_name(t.dtype());
    t = t.detach().contiguous().clone();
    t.set_requires_grad(true);
  }
  auto skipped = [&](size_t i) {
    for (size_t s : opt.skip_inputs)
      if (s == i) return true;
    return false;
  };
  // Fixed random weights r for the objective.
  Tensor y0;
  {
    NoGradGuard ng;
    y0 = f(inputs);
  }
  Tensor r = rand_double(y0.shape(), opt.seed, -1.0, 1.0);
  auto objective = [&]() -> double {
    NoGradGuard ng;
    Tensor y = f(inputs);
    return ops::sum(ops::mul(y.to(DType::Float64), r)).item();
  };
  // Analytic.
  Tensor y = f(inputs);
  Tensor L = ops::sum(ops::mul(y, r));
  L.backward();
  std::ostringstream fails;
  int n_fail = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor& x = inputs[i];
    if (!x.defined() || skipped(i)) continue;
    Tensor ga = x.grad();
    std::vector<double> an = ga.defined() ? ga.contiguous().to_vector<double>()
                                          : std::vector<double>(static_cast<size_t>(x.numel()), 0.0);
    double* p = x.data<double>();
    for (int64_t e = 0; e < x.numel(); ++e) {
      double orig = p[e];
      p[e] = orig + opt.eps;
      double fp = objective();
      p[e] = orig - opt.eps;
      double fm = objective();
      p[e] = orig;
      double f0 = objective();
      double num = (fp - fm) / (2 * opt.eps);
      double right = (fp - f0) / opt.eps, left = (f0 - fm) / opt.eps;
      double a = an[static_cast<size_t>(e)];
      double tol = opt.atol + opt.rtol * std::max({std::fabs(a), std::fabs(num), 1.0});
      if (std::fabs(right - left) > 10 * tol) continue;  // kink: one-sided slopes disagree
      if (!(std::fabs(a - num) <= tol)) {
        if (n_fail < 8)
          fails << "\n  input " << i << " " << shape_str(x.shape()) << " element " << e << ": analytic " << a
                << " numeric " << num;
        ++n_fail;
      }
    }
  }
  if (n_fail) return ::testing::AssertionFailure() << n_fail << " gradient element(s) differ:" << fails.str();
  return ::testing::AssertionSuccess();
}

}  // namespace testing
}  // namespace ipsnet
