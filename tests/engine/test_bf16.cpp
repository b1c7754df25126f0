// Mixed precision (config key 'precision: bf16', issue 17): under
// PrecisionGuard the float32 convolutions and matrix products run with
// bfloat16 inputs and weights and float32 accumulation, forward and backward.
//
// Tolerance (rigorous, element by element): bfloat16 keeps 8 significant bits,
// so rounding a float32 to it (round to nearest even) has relative error at
// most u = 2^-8. A product of two rounded factors is exact in float32 (8 + 8
// bits) and off from the float32 product by at most (2u + u^2) |a b|. Summed
// over the K terms of one output, the error is at most (2u + u^2) sum |a_k b_k|
// plus the float32 accumulation error of both paths (K 2^-24 sum |a_k b_k|
// each, a loose worst case). sum |a_k b_k| is the same op applied to |a| and
// |b|: its forward and, for the gradients of sum(y * r), the gradients of
// sum(conv(|x|, |w|) * |r|) with respect to |x| and |w|. (On random data the
// error is ~sqrt(K) times smaller than this bound; the test also checks the
// bfloat16 path really ran: results must differ from float32.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine/autograd/grad_mode.h"
#include "engine/engine.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

bool have_bf16() {
  const Backend& be = backend_for(Device::cpu());
  return be.supports_bf16_conv() && be.supports_bf16_gemm();
}

#define SKIP_WITHOUT_BF16()                                                                              \
  if (!have_bf16()) GTEST_SKIP() << "SKIPPED: this CPU has no AVX512-BF16 (oneDNN's bfloat16 conv/matmul)"

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

struct Run {
  Tensor y;
  std::vector<Tensor> grads;
};

// y = f(inputs) and the gradients of sum(y * r); with abs_problem the inputs
// and r are replaced by their absolute values (the error bound's terms).
Run run(const Fn& f, const std::vector<Tensor>& inputs, const Tensor& r, bool bf16, bool abs_problem,
        bool backward_bf16) {
  std::vector<Tensor> in;
  for (const Tensor& t : inputs) {
    Tensor c = abs_problem ? ops::abs(t) : t.clone();
    c.set_requires_grad(true);
    in.push_back(c);
  }
  Run out;
  Tensor loss;
  {
    PrecisionGuard p(bf16);
    out.y = f(in);
    loss = ops::sum(ops::mul(out.y, abs_problem ? ops::abs(r) : r));
  }
  {
    PrecisionGuard p(backward_bf16);
    loss.backward();
  }
  out.y = out.y.detach();
  for (const Tensor& t : in) out.grads.push_back(t.grad());
  return out;
}

// |bf16 - fp32| <= ((2u + u^2) + 2 K 2^-24) bound, element by element.
::testing::AssertionResult within_bound(const Tensor& bf, const Tensor& fp, const Tensor& bound, int64_t K,
                                        const std::string& what) {
  const double u = std::ldexp(1.0, -8);
  const double tol = 2 * u + u * u + 2.0 * double(K) * std::ldexp(1.0, -24);
  std::vector<float> a = bf.contiguous().to_vector<float>(), b = fp.contiguous().to_vector<float>(),
                     s = bound.contiguous().to_vector<float>();
  if (a.size() != b.size() || a.size() != s.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  double worst = 0, max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    max_diff = std::max(max_diff, d);
    const double lim = tol * double(s[i]) * 1.0001 + 1e-30;
    worst = std::max(worst, d / lim);
    if (d > lim)
      return ::testing::AssertionFailure() << what << "[" << i << "]: bf16 " << a[i] << " vs fp32 " << b[i]
                                           << ", |diff| " << d << " > bound " << lim;
  }
  if (max_diff == 0)
    return ::testing::AssertionFailure() << what << ": bf16 equals fp32 exactly (the bfloat16 path did not run)";
  std::printf("[ bf16 bound ] %s: max |diff| %.3g, worst diff/bound %.3f\n", what.c_str(), max_diff, worst);
  return ::testing::AssertionSuccess();
}

// Compares the bf16 run of f to float32, y and every gradient, with K the
// longest reduction of any of them.
// float32_inputs: inputs whose gradient is a float32 reduction, not a product
// (linear's bias: a sum of the output gradient), so bit-identical to float32.
void check_op(const Fn& f, const std::vector<Tensor>& inputs, const Shape& y_shape, int64_t K, const char* name,
              const std::vector<size_t>& float32_inputs = {}) {
  Generator gen(17, 0);
  Tensor r = Tensor::randn(y_shape, gen);
  Run fp = run(f, inputs, r, false, false, false);
  Run bf = run(f, inputs, r, true, false, true);
  Run bound = run(f, inputs, r, false, true, false);
  EXPECT_TRUE(within_bound(bf.y, fp.y, bound.y, K, std::string(name) + " forward"));
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (std::find(float32_inputs.begin(), float32_inputs.end(), i) != float32_inputs.end())
      EXPECT_EQ(testing::max_abs_diff(bf.grads[i], fp.grads[i]), 0.0) << name << " input " << i;
    else
      EXPECT_TRUE(within_bound(bf.grads[i], fp.grads[i], bound.grads[i], K,
                               std::string(name) + " gradient of input " + std::to_string(i)));
  }
  // The backward runs in the precision recorded at forward time, whatever the
  // switch says when backward runs.
  Run bf_fwd_only = run(f, inputs, r, true, false, false);
  Run fp_then_bf = run(f, inputs, r, false, false, true);
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(testing::max_abs_diff(bf_fwd_only.grads[i], bf.grads[i]), 0.0) << name << " input " << i;
    EXPECT_EQ(testing::max_abs_diff(fp_then_bf.grads[i], fp.grads[i]), 0.0) << name << " input " << i;
  }
}

Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed, 0);
  return Tensor::randn(s, g);
}

TEST(PrecisionBf16, Conv2d3x3WithBias) {
  SKIP_WITHOUT_BF16();
  // Reductions: forward 16*9 = 144, dx 24*9 = 216, dw and db 4*10*10 = 400.
  check_op([](const std::vector<Tensor>& t) { return ops::conv2d(t[0], t[1], t[2], {1, 1}, {1, 1}); },
           {randn({4, 16, 10, 10}, 1), randn({24, 16, 3, 3}, 2), randn({24}, 3)}, {4, 24, 10, 10}, 400, "conv3x3");
}

TEST(PrecisionBf16, Conv2dStemStride2AndOneByOne) {
  SKIP_WITHOUT_BF16();
  // The one-channel 7x7 stride-2 stem of the Megapixel MNIST encoder (forward 49,
  // dx <= 8*49 = 392, dw 2*14*14 = 392) and a 1x1 stride-2 downsample conv.
  check_op([](const std::vector<Tensor>& t) { return ops::conv2d(t[0], t[1], Tensor(), {2, 2}, {3, 3}); },
           {randn({2, 1, 28, 28}, 4), randn({8, 1, 7, 7}, 5)}, {2, 8, 14, 14}, 392, "stem7x7");
  check_op([](const std::vector<Tensor>& t) { return ops::conv2d(t[0], t[1], Tensor(), {2, 2}, {0, 0}); },
           {randn({3, 32, 8, 8}, 6), randn({16, 32, 1, 1}, 7)}, {3, 16, 4, 4}, 48, "conv1x1");
}

TEST(PrecisionBf16, LinearAndMatmul) {
  SKIP_WITHOUT_BF16();
  // linear (rows folded into one product): K = 40 forward, 7 for dx, 6 for dw.
  check_op([](const std::vector<Tensor>& t) { return ops::linear(t[0], t[1], t[2]); },
           {randn({6, 40}, 8), randn({7, 40}, 9), randn({7}, 10)}, {6, 7}, 40, "linear", {2});
  // Batched with a leading batch folded into the rows (3-D @ 2-D).
  check_op([](const std::vector<Tensor>& t) { return ops::matmul(t[0], t[1]); },
           {randn({3, 5, 40}, 11), randn({40, 7}, 12)}, {3, 5, 7}, 40, "matmul3d2d");
  // Batched, one operand broadcast over the batch (batch stride 0) and a
  // transposed view of the other (attention's q k^T shape).
  check_op([](const std::vector<Tensor>& t) { return ops::matmul(t[0].transpose(-1, -2), t[1]); },
           {randn({4, 40, 5}, 13), randn({1, 40, 7}, 14)}, {4, 5, 7}, 40, "matmul_bcast_t");
}

TEST(PrecisionBf16, FloatSixtyFourAndNoGuardAreUnchanged) {
  // Double tensors ignore the switch (the gradchecks' path); float32 without
  // the guard is the float32 path (bit-identical: the golden tests run it).
  Tensor x = randn({2, 3, 6, 6}, 15).to(DType::Float64), w = randn({4, 3, 3, 3}, 16).to(DType::Float64);
  Tensor a = ops::conv2d(x, w, Tensor(), {1, 1}, {1, 1});
  Tensor b;
  {
    PrecisionGuard p(true);
    EXPECT_TRUE(precision_bf16_enabled());
    b = ops::conv2d(x, w, Tensor(), {1, 1}, {1, 1});
  }
  EXPECT_FALSE(precision_bf16_enabled());
  EXPECT_EQ(testing::max_abs_diff(a, b), 0.0);
}

}  // namespace
}  // namespace ipsnet
