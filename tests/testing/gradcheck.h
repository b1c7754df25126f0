// Numeric gradient checking in double (DESIGN.md, "Tests", layer 1).
//
// Objective L = sum(r * f(inputs)) with a fixed random r. Analytic gradients
// come from backward(); numeric ones from central differences. An element
// passes when |a - n| <= atol + rtol * max(|a|, |n|, 1). Kinks (ReLU at 0,
// max-pool ties) are detected by one-sided differences that disagree and
// skipped. A function that draws random numbers must re-seed its generator on
// every call (so every evaluation sees the same mask).
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "engine/engine.h"

namespace ipsnet {
namespace testing {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-4;
  uint64_t seed = 1234;
  /// Inputs (by position) whose gradient is not checked (e.g. integer-valued).
  std::vector<size_t> skip_inputs;
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

/// inputs: float64 CPU tensors; each gets requires_grad. Returns success or a
/// message naming input, element, analytic and numeric values.
::testing::AssertionResult gradcheck(const GradFn& f, std::vector<Tensor> inputs,
                                     const GradcheckOptions& opt = {});

/// A float64 tensor with uniform values in [lo, hi).
Tensor rand_double(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0);

/// Max |a - b| / (|b| + 1e-12)-style comparison helpers.
double max_abs_diff(const Tensor& a, const Tensor& b);
::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol, double rtol);

}  // namespace testing
}  // namespace ipsnet
