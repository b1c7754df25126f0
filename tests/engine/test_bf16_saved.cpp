// precision: bf16 (issue 17): activations saved for backward in bfloat16.
//
// Storage-only DType::BFloat16 (engine/tensor/bf16.h) and SavedTensor::bf16.
// Under PrecisionGuard(true), a recorded node keeps an intermediate float32
// tensor as a bfloat16 copy where its backward allows it:
//  - conv2d's input and matmul/linear's operands, whose gradient products
//    round them to bfloat16 anyway: gradients bit-identical to the bf16 path
//    that kept them in float32;
//  - ReLU's output (backward reads only its sign): gradient bit-identical to
//    float32 (signs and zeros survive the rounding; only float32 subnormals in
//    (0, 2^-134] would lose their gradient, none occur here);
//  - BatchNorm's input: BatchNorm then normalises the input rounded to
//    bfloat16 (PyTorch's autocast feeds it the bf16 conv output), so forward,
//    backward and recomputation see the same values: bit-identical to float32
//    BatchNorm applied to the rounded input, and close to float32 BatchNorm of
//    the exact input (tolerance derived at the test).
// Bytes: memory_stats' allocated bytes held by the graph after the forward,
// exactly 2 bytes per element instead of 4 for what is kept in bfloat16.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "engine/autograd/grad_mode.h"
#include "engine/engine.h"
#include "engine/tensor/bf16.h"
#include "models/resnet.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

bool have_bf16() {
  const Backend& be = backend_for(Device::cpu());
  return be.supports_bf16_conv() && be.supports_bf16_gemm();
}

#define SKIP_WITHOUT_BF16()                                                                              \
  if (!have_bf16()) GTEST_SKIP() << "SKIPPED: this CPU has no AVX512-BF16 (oneDNN's bfloat16 conv/matmul)"

Tensor randn(const Shape& s, uint64_t seed, double mean = 0.0) {
  Generator g(seed, 0);
  return Tensor::randn(s, g, mean);
}

int64_t allocated() { return memory_stats(Device::cpu()).allocated_bytes; }

uint16_t bits_of(const Tensor& b, int64_t i) { return static_cast<const uint16_t*>(b.raw_data())[i]; }

TEST(Bf16Storage, DTypeConversionAndRefusals) {
  EXPECT_EQ(dtype_size(DType::BFloat16), 2u);
  EXPECT_STREQ(dtype_name(DType::BFloat16), "bfloat16");
  EXPECT_FALSE(is_floating(DType::BFloat16));
  const float one = 1.0f;
  const std::vector<float> v = {one,
                                one + std::ldexp(1.0f, -8),                              // tie -> even (1)
                                one + 3 * std::ldexp(1.0f, -8),                          // tie -> even (1 + 2^-6)
                                -(one + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -16)),  // above the tie
                                std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity(),
                                0.0f,
                                -0.0f,
                                FLT_MAX,  // rounds up to +inf
                                std::numeric_limits<float>::quiet_NaN()};
  const std::vector<uint16_t> want = {0x3F80, 0x3F80, 0x3F82, 0xBF81, 0x7F80, 0xFF80, 0x0000, 0x8000, 0x7F80};
  Tensor f = Tensor::from_vector(v, {int64_t(v.size())});
  Tensor b = f.to(DType::BFloat16);
  EXPECT_EQ(b.dtype(), DType::BFloat16);
  EXPECT_EQ(b.nbytes(), v.size() * 2);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(bits_of(b, int64_t(i)), want[i]) << "element " << i;
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(bits_of(b, int64_t(v.size() - 1)))));
  // Widening is exact, and bf16 values survive the round trip bit for bit.
  Tensor back = b.to(DType::Float32);
  std::vector<float> w = back.to_vector<float>();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(w[i], bf16_bits_to_float(want[i]));
  Tensor x = randn({4097}, 1);
  Tensor r1 = x.to(DType::BFloat16).to(DType::Float32);
  EXPECT_EQ(testing::max_abs_diff(r1.to(DType::BFloat16).to(DType::Float32), r1), 0.0);
  // Relative rounding error at most 2^-8 (round to nearest, 8 significant
  // bits: half a unit of 2^-7 in the last place, relative to |x| >= 2^e).
  std::vector<float> xv = x.to_vector<float>(), rv = r1.to_vector<float>();
  for (size_t i = 0; i < xv.size(); ++i) ASSERT_LE(std::fabs(rv[i] - xv[i]), std::ldexp(std::fabs(xv[i]), -8));
  // Storage only: a bf16 copy of a bf16 tensor works, ops refuse in one line.
  EXPECT_EQ(bits_of(b.clone(), 2), 0x3F82);
  for (auto op : std::vector<std::function<void()>>{[&] { ops::add(b, b); }, [&] { ops::relu(b); },
                                                      [&] { b.to(DType::Float64); }}) {
    try {
      op();
      ADD_FAILURE() << "an op accepted a bfloat16 tensor";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_TRUE(m.find("bfloat16") != std::string::npos) << m;
    }
  }
}

struct Out {
  Tensor y;
  std::vector<Tensor> grads;  // x0's, then each parameter's
  int64_t saved = 0;          // bytes the graph holds after the forward, beyond y
};

using Fn = std::function<Tensor(const Tensor& x, const std::vector<Tensor>& params)>;

// y = f(x, params) with x = neg(neg(x0)) (an intermediate of the recorded
// graph, exactly x0's values) or x = x0 itself (a leaf, which is never copied);
// then the gradients of sum(y * r).
Out run_case(const Fn& f, const Tensor& x_value, const std::vector<Tensor>& param_values, bool bf16,
             bool intermediate) {
  Tensor x0 = x_value.clone();
  x0.set_requires_grad(true);
  std::vector<Tensor> params;
  for (const Tensor& p : param_values) {
    Tensor c = p.clone();
    c.set_requires_grad(true);
    params.push_back(c);
  }
  Out o;
  Tensor x = intermediate ? ops::neg(ops::neg(x0)) : x0;
  const int64_t before = allocated() - (intermediate ? int64_t(x.nbytes()) : 0);
  {
    PrecisionGuard p(bf16);
    o.y = f(x, params);
  }
  x = Tensor();
  o.saved = allocated() - before - int64_t(o.y.nbytes());
  Tensor r = randn(o.y.shape(), 99).to(o.y.dtype());
  ops::sum(ops::mul(o.y, r)).backward();
  o.y = o.y.detach();
  o.grads.push_back(x0.grad());
  for (const Tensor& p : params) o.grads.push_back(p.grad());
  return o;
}

void expect_same(const Out& a, const Out& b, const char* what) {
  EXPECT_EQ(testing::max_abs_diff(a.y, b.y), 0.0) << what << " forward";
  for (size_t i = 0; i < a.grads.size(); ++i)
    EXPECT_EQ(testing::max_abs_diff(a.grads[i], b.grads[i]), 0.0) << what << " gradient " << i;
}

TEST(Bf16Saved, Conv2dKeepsItsInputInBf16) {
  SKIP_WITHOUT_BF16();
  Fn f = [](const Tensor& x, const std::vector<Tensor>& p) { return ops::conv2d(x, p[0], p[1], {1, 1}, {1, 1}); };
  const Tensor x = randn({4, 16, 16, 16}, 2), w = randn({8, 16, 3, 3}, 3), b = randn({8}, 4);
  const int64_t n = x.numel();
  const Out fp = run_case(f, x, {w, b}, false, true);
  const Out bf = run_case(f, x, {w, b}, true, true);
  const Out bf_leaf = run_case(f, x, {w, b}, true, false);  // x kept in float32, as before
  EXPECT_EQ(fp.saved, 4 * n) << "float32: the input, unchanged";
  EXPECT_EQ(bf.saved, 2 * n) << "bf16: half";
  expect_same(bf, bf_leaf, "conv bf16 saved vs float32 saved");
  EXPECT_GT(testing::max_abs_diff(bf.grads[1], fp.grads[1]), 0.0) << "the bfloat16 path ran";
}

TEST(Bf16Saved, LinearKeepsItsInputInBf16) {
  SKIP_WITHOUT_BF16();
  Fn f = [](const Tensor& x, const std::vector<Tensor>& p) { return ops::linear(x, p[0], p[1]); };
  const Tensor x = randn({4, 16, 40}, 5), w = randn({24, 40}, 6), b = randn({24}, 7);
  const int64_t n = x.numel();
  const Out fp = run_case(f, x, {w, b}, false, true);
  const Out bf = run_case(f, x, {w, b}, true, true);
  const Out bf_leaf = run_case(f, x, {w, b}, true, false);
  EXPECT_EQ(fp.saved, 4 * n);
  EXPECT_EQ(bf.saved, 2 * n);  // the weight (a parameter, held anyway) stays float32
  expect_same(bf, bf_leaf, "linear bf16 saved vs float32 saved");
  // Both operands intermediate: matmul keeps both in bfloat16.
  Fn g = [](const Tensor& x, const std::vector<Tensor>& p) { return ops::matmul(x, ops::neg(ops::neg(p[0]))); };
  const Tensor m = randn({40, 24}, 8);
  const Out gfp = run_case(g, x, {m}, false, true), gbf = run_case(g, x, {m}, true, true);
  EXPECT_EQ(gfp.saved, 4 * (n + m.numel()));
  EXPECT_EQ(gbf.saved, 2 * (n + m.numel()));
}

TEST(Bf16Saved, ReluKeepsItsOutputInBf16AndSharesItWithTheNextConv) {
  SKIP_WITHOUT_BF16();
  const Tensor x = randn({4, 16, 16, 16}, 9), w = randn({8, 16, 3, 3}, 10);
  const int64_t n = x.numel();
  // neg(relu(x)): the ReLU's output is an intermediate only the node keeps.
  Fn f = [](const Tensor& x, const std::vector<Tensor>&) { return ops::neg(ops::relu(x)); };
  const Out fp = run_case(f, x, {}, false, true), bf = run_case(f, x, {}, true, true);
  EXPECT_EQ(fp.saved, 4 * n);
  EXPECT_EQ(bf.saved, 2 * n);
  expect_same(bf, fp, "relu: the mask is exact");
  // conv(relu(x)): the ReLU and the convolution save the same tensor: one
  // bfloat16 copy serves both.
  Fn g = [](const Tensor& x, const std::vector<Tensor>& p) {
    return ops::conv2d(ops::relu(x), p[0], Tensor(), {1, 1}, {1, 1});
  };
  const Out gfp = run_case(g, x, {w}, false, true), gbf = run_case(g, x, {w}, true, true);
  EXPECT_EQ(gfp.saved, 4 * n);
  EXPECT_EQ(gbf.saved, 2 * n);
}

// y = batch_norm(x) (training, batch statistics, running stats updated).
Tensor bn(const Tensor& x, const std::vector<Tensor>& p, bool relu) {
  Tensor rm = Tensor::zeros({x.size(1)}), rv = Tensor::ones({x.size(1)});
  return relu ? ops::batch_norm_relu(x, p[0], p[1], rm, rv, true, 0.1, 1e-5, false)
              : ops::batch_norm(x, p[0], p[1], rm, rv, true, 0.1, 1e-5);
}

TEST(Bf16Saved, BatchNormReadsAndKeepsItsInputInBf16) {
  SKIP_WITHOUT_BF16();
  const Tensor x = randn({8, 16, 12, 12}, 11, 0.5), gamma = randn({16}, 12), beta = randn({16}, 13);
  const Tensor x_rounded = x.to(DType::BFloat16).to(DType::Float32);
  const int64_t n = x.numel();
  for (bool relu : {false, true}) {
    SCOPED_TRACE(relu ? "batch_norm_relu" : "batch_norm");
    // With the ReLU, neg() makes its output an intermediate only the node keeps.
    Fn f = [relu](const Tensor& x, const std::vector<Tensor>& p) {
      return relu ? ops::neg(bn(x, p, true)) : bn(x, p, false);
    };
    const Out fp = run_case(f, x, {gamma, beta}, false, true);
    const Out bf = run_case(f, x, {gamma, beta}, true, true);
    // The input (and, with the ReLU, its output for the mask) in 2 bytes
    // instead of 4; the per-channel mean and rstd are the same in both.
    EXPECT_EQ(fp.saved - bf.saved, (relu ? 4 : 2) * n);
    // Bit for bit float32 BatchNorm of the input rounded to bfloat16.
    const Out fp_rounded = run_case(f, x_rounded, {gamma, beta}, false, true);
    expect_same(bf, fp_rounded, "bn bf16 vs float32 bn of the rounded input");
    // Against float32 of the exact input: each x moves by at most 2^-8 |x|;
    // the normalised value x^ = (x - mean) rstd then moves by at most
    // 2^-8 (|x| + mean|x|) rstd from x and the mean, plus |x^| 2^-8 from the
    // variance (a weighted mean of the same relative changes), so
    // |dy| <= |gamma| 2^-8 (|x^| + 2 max|x| rstd) (first order; the ReLU is
    // 1-Lipschitz). For N(0.5, 1) data max|x| rstd < 6 and |x^| <= 4 here:
    // 2^-8 * 16 * max|gamma| element-wise. Gradients without the ReLU: the
    // same relative size 2^-4 against the largest gradient (dx and dgamma
    // multiply x^ by sums of g x^, each moved by the same relative amount).
    // With the ReLU the mask flips where |bn(x)| is below that bound (a few
    // in ten thousand here, printed), each flip moving that element's
    // gradient by all of it: there the test bounds the relative L2 error by
    // 2 sqrt(flipped fraction) + 2^-4 and the flipped fraction by 1 %.
    double gmax = 0;
    for (float v : gamma.to_vector<float>()) gmax = std::max(gmax, double(std::fabs(v)));
    const double dy = testing::max_abs_diff(bf.y, fp.y);
    std::printf("[ bf16 bn ] %s: max |dy| %.3g (bound %.3g)\n", relu ? "bn+relu" : "bn", dy,
                std::ldexp(16.0 * gmax, -8));
    EXPECT_LE(dy, std::ldexp(16.0 * gmax, -8));
    EXPECT_GT(dy, 0.0) << "the input was rounded";
    const std::vector<float> yb = bf.y.to_vector<float>(), yf = fp.y.to_vector<float>();
    int64_t flips = 0;
    for (size_t i = 0; i < yb.size(); ++i) flips += (yb[i] != 0) != (yf[i] != 0);
    const double flipped = double(flips) / double(yb.size());
    EXPECT_LE(flipped, 0.01);
    for (size_t i = 0; i < fp.grads.size(); ++i) {
      const std::vector<float> gb = bf.grads[i].to_vector<float>(), gf = fp.grads[i].to_vector<float>();
      double gm = 0, d = 0, d2 = 0, n2 = 0;
      for (size_t k = 0; k < gf.size(); ++k) {
        const double e = double(gb[k]) - double(gf[k]);
        gm = std::max(gm, double(std::fabs(gf[k])));
        d = std::max(d, std::fabs(e));
        d2 += e * e;
        n2 += double(gf[k]) * double(gf[k]);
      }
      const double rel_l2 = std::sqrt(d2 / n2);
      std::printf("[ bf16 bn ] gradient %zu: max |diff| %.3g, max |grad| %.3g, relative L2 %.3g (mask flips %.4f)\n",
                  i, d, gm, rel_l2, flipped);
      if (relu)
        EXPECT_LE(rel_l2, 2 * std::sqrt(flipped) + 1.0 / 16) << "gradient " << i;
      else
        EXPECT_LE(d, std::ldexp(gm, -4)) << "gradient " << i;
    }
  }
}

TEST(Bf16Saved, RecomputedBatchNormReluIsExact) {
  SKIP_WITHOUT_BF16();
  // batch_norm_relu with recomputation feeding a convolution that keeps the
  // recipe: backward recomputes relu(bn(x)) from the bfloat16 copy, bit for
  // bit the forward's values: the same as the run whose (leaf) input is the
  // already-rounded x, kept in float32.
  const Tensor x = randn({4, 16, 10, 10}, 14, 0.5), gamma = randn({16}, 15), beta = randn({16}, 16),
               w = randn({8, 16, 3, 3}, 17);
  Fn f = [](const Tensor& x, const std::vector<Tensor>& p) {
    Tensor rm = Tensor::zeros({x.size(1)}), rv = Tensor::ones({x.size(1)});
    Tensor h = ops::batch_norm_relu(x, p[0], p[1], rm, rv, true, 0.1, 1e-5, true);
    return ops::conv2d(h, p[2], Tensor(), {1, 1}, {1, 1});
  };
  const Out bf = run_case(f, x, {gamma, beta, w}, true, true);
  const Out ref = run_case(f, x.to(DType::BFloat16).to(DType::Float32), {gamma, beta, w}, true, false);
  expect_same(bf, ref, "recomputed bn+relu");
  const Out fp = run_case(f, x, {gamma, beta, w}, false, true);
  EXPECT_EQ(fp.saved - bf.saved, 2 * x.numel());
}

TEST(Bf16Saved, Float32PathUnchanged) {
  // Without the guard nothing is converted: what is saved is the float32
  // tensor itself (4 bytes an element, above), and double tensors ignore the guard.
  const Tensor x = randn({2, 4, 6, 6}, 18).to(DType::Float64), w = randn({3, 4, 3, 3}, 19).to(DType::Float64);
  Fn f = [](const Tensor& x, const std::vector<Tensor>& p) {
    return ops::conv2d(ops::relu(x), p[0], Tensor(), {1, 1}, {1, 1});
  };
  const Out a = run_case(f, x, {w}, false, true), b = run_case(f, x, {w}, true, true);
  EXPECT_EQ(a.saved, 8 * x.numel());
  EXPECT_EQ(b.saved, 8 * x.numel());
  expect_same(a, b, "float64 under the guard");
}

TEST(Bf16Saved, ResNetEncoderHoldsAboutHalf) {
  SKIP_WITHOUT_BF16();
  // The 2-stage ResNet-18 encoder of Megapixel MNIST in training mode, with
  // recomputation (the default): the bytes its graph holds after the forward.
  auto held = [](bool bf16, double* loss) {
    Generator gen(3, 0);
    ResNet net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(2), gen);
    net.train(true);
    Tensor x = randn({8, 1, 50, 50}, 20);
    const int64_t before = allocated();
    Tensor y;
    {
      PrecisionGuard p(bf16);
      y = net.forward(x);
    }
    const int64_t saved = allocated() - before - int64_t(y.nbytes());
    Tensor l = ops::sum(ops::mul(y, y));
    l.backward();
    *loss = l.item();
    return saved;
  };
  double lf = 0, lb = 0;
  const int64_t fp = held(false, &lf), bf = held(true, &lb);
  const double ratio = double(bf) / double(fp);
  std::printf("[ bf16 resnet ] saved after forward: fp32 %.1f KiB, bf16 %.1f KiB (%.3fx); sum y^2 %.6g vs %.6g\n",
              fp / 1024.0, bf / 1024.0, ratio, lf, lb);
  // Everything but the per-channel statistics is halved.
  EXPECT_LT(ratio, 0.52);
  EXPECT_NEAR(lb / lf, 1.0, 0.02);
}

}  // namespace
}  // namespace ipsnet
