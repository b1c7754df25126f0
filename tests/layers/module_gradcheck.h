// Numeric gradient check of a module's parameters and input (float64).
//
// The objective is sum(r * f(x)) with a fixed random r; analytic gradients
// from backward(), numeric ones from central differences on each parameter
// element in place. Tolerance atol + rtol * max(|a|, |n|, 1); kinks (one-sided
// slopes that disagree) are skipped. At most `max_elems` evenly spaced elements
// per tensor are checked. f must be deterministic (re-seed dropout inside).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>

#include "layers/module.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace testing {

inline ::testing::AssertionResult module_gradcheck(Module& m, const std::function<Tensor(const Tensor&)>& f,
                                                   Tensor x, int64_t max_elems = 200, double eps = 1e-6,
                                                   double atol = 1e-6, double rtol = 1e-4) {
  m.to(DType::Float64);
  m.zero_grad();
  x = x.detach().contiguous().clone();
  x.set_requires_grad(true);
  Tensor y0;
  {
    NoGradGuard ng;
    y0 = f(x);
  }
  Tensor r = rand_double(y0.shape(), 777, -1.0, 1.0);
  auto objective = [&]() {
    NoGradGuard ng;
    return ops::sum(ops::mul(f(x), r)).item();
  };
  ops::sum(ops::mul(f(x), r)).backward();
  std::vector<std::pair<std::string, Tensor>> targets{{"input", x}};
  for (const auto& it : m.named_parameters())
    if (it.second.requires_grad()) targets.emplace_back(it.first, it.second);
  std::ostringstream fails;
  int n_fail = 0, n_checked = 0;
  for (auto& t : targets) {
    Tensor& p = t.second;
    Tensor g = p.grad();
    std::vector<double> an =
        g.defined() ? g.contiguous().to_vector<double>() : std::vector<double>(static_cast<size_t>(p.numel()), 0.0);
    double* data = p.data<double>();
    int64_t n = p.numel();
    int64_t count = std::min(n, max_elems);
    for (int64_t k = 0; k < count; ++k) {
      int64_t e = count == n ? k : k * n / count;
      double orig = data[e];
      data[e] = orig + eps;
      double fp = objective();
      data[e] = orig - eps;
      double fm = objective();
      data[e] = orig;
      double f0 = objective();
      double num = (fp - fm) / (2 * eps);
      double a = an[static_cast<size_t>(e)];
      double tol = atol + rtol * std::max({std::fabs(a), std::fabs(num), 1.0});
      if (std::fabs((fp - f0) / eps - (f0 - fm) / eps) > 10 * tol) continue;
      ++n_checked;
      if (!(std::fabs(a - num) <= tol)) {
        if (n_fail < 8) fails << "\n  " << t.first << " element " << e << ": analytic " << a << " numeric " << num;
        ++n_fail;
      }
    }
  }
  if (n_fail) return ::testing::AssertionFailure() << n_fail << " gradient element(s) differ:" << fails.str();
  if (n_checked == 0) return ::testing::AssertionFailure() << "no element was checked";
  return ::testing::AssertionSuccess();
}

}  // namespace testing
}  // namespace ipsnet
