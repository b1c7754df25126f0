// conv2d, batch_norm, max_pool2d, adaptive_avg_pool2d_1x1: numeric gradient
// checks in double, oneDNN (float32) against the reference path (float32 and
// float64), PyTorch's running-stat formula, and the error messages.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

using testing::gradcheck;
using testing::rand_double;
using ops::Pair;

// Restores the CPU conv implementation at scope exit.
struct ImplGuard {
  std::string prev = cpu_conv_impl();
  explicit ImplGuard(const std::string& impl) { set_cpu_conv_impl(impl); }
  ~ImplGuard() { set_cpu_conv_impl(prev); }
};

// max |a - b| / max |b|: the error relative to the tensor's scale.
double rel_err(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to(DType::Float64).contiguous().to_vector<double>();
  std::vector<double> vb = b.to(DType::Float64).contiguous().to_vector<double>();
  EXPECT_EQ(va.size(), vb.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(vb[i])) return INFINITY;
    num = std::max(num, std::fabs(va[i] - vb[i]));
    den = std::max(den, std::fabs(vb[i]));
  }
  return den > 0 ? num / den : num;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no exception)";
}

// ---- conv2d ----------------------------------------------------------------------

struct ConvCase {
  Shape x, w;
  bool bias;
  Pair stride, padding, dilation;
};

std::string conv_name(const ConvCase& c) {
  return str_cat("x ", shape_str(c.x), " w ", shape_str(c.w), c.bias ? " +b" : "", " s (", c.stride[0],
                 ", ", c.stride[1], ") p (", c.padding[0], ", ", c.padding[1], ") d (", c.dilation[0],
                 ", ", c.dilation[1], ")");
}

const std::vector<ConvCase>& grad_cases() {
  static const std::vector<ConvCase> cases = {
      {{2, 3, 6, 6}, {4, 3, 3, 3}, true, {1, 1}, {1, 1}, {1, 1}},   // 3x3 s1 p1
      {{2, 2, 7, 7}, {3, 2, 3, 3}, false, {2, 2}, {0, 0}, {1, 1}},  // 3x3 s2 no pad
      {{2, 2, 7, 7}, {3, 2, 3, 3}, true, {2, 2}, {1, 1}, {1, 1}},   // 3x3 s2 p1 (layer2)
      {{1, 2, 8, 8}, {2, 2, 3, 3}, true, {1, 1}, {2, 2}, {2, 2}},   // dilation 2
      {{2, 1, 11, 11}, {3, 1, 7, 7}, false, {2, 2}, {3, 3}, {1, 1}},  // ResNet conv1
      {{2, 3, 5, 5}, {4, 3, 1, 1}, false, {2, 2}, {0, 0}, {1, 1}},  // 1x1 s2 downsample
      {{2, 2, 5, 6}, {3, 2, 3, 2}, true, {2, 1}, {1, 0}, {1, 2}},   // asymmetric everything
  };
  return cases;
}

TEST(Conv2d, GradcheckDouble) {
  for (const ConvCase& c : grad_cases()) {
    SCOPED_TRACE(conv_name(c));
    std::vector<Tensor> in{rand_double(c.x, 1), rand_double(c.w, 2)};
    if (c.bias) in.push_back(rand_double({c.w[0]}, 3));
    auto f = [&](const std::vector<Tensor>& t) {
      return ops::conv2d(t[0], t[1], c.bias ? t[2] : Tensor(), c.stride, c.padding, c.dilation);
    };
    EXPECT_TRUE(gradcheck(f, in));
  }
}

TEST(Conv2d, OutputShapeMatchesPyTorch) {
  Generator gen(5);
  Tensor x = Tensor::randn({2, 1, 50, 50}, gen);
  Tensor w1 = Tensor::randn({64, 1, 7, 7}, gen);
  EXPECT_EQ(ops::conv2d(x, w1, Tensor(), {2, 2}, {3, 3}).shape(), (Shape{2, 64, 25, 25}));
  Tensor x13 = Tensor::randn({2, 64, 13, 13}, gen);
  Tensor wd = Tensor::randn({128, 64, 1, 1}, gen);
  EXPECT_EQ(ops::conv2d(x13, wd, Tensor(), {2, 2}).shape(), (Shape{2, 128, 7, 7}));
  Tensor x6 = Tensor::randn({1, 2, 6, 6}, gen);
  Tensor w11 = Tensor::randn({2, 2, 1, 1}, gen);
  EXPECT_EQ(ops::conv2d(x6, w11, Tensor(), {2, 2}).shape(), (Shape{1, 2, 3, 3}));
}

// Forward y and the gradients of sum(r * y) w.r.t. x, weight, bias, computed
// in x's dtype with the current CPU implementation.
std::vector<Tensor> conv_fwd_bwd(const ConvCase& c, DType dt, uint64_t seed) {
  Tensor x = rand_double(c.x, seed).to(dt).set_requires_grad(true);
  Tensor w = rand_double(c.w, seed + 1).to(dt).set_requires_grad(true);
  Tensor b = c.bias ? rand_double({c.w[0]}, seed + 2).to(dt).set_requires_grad(true) : Tensor();
  Tensor y = ops::conv2d(x, w, b, c.stride, c.padding, c.dilation);
  Tensor r = rand_double(y.shape(), seed + 3).to(dt);
  ops::sum(ops::mul(y, r)).backward();
  return {y.detach(), x.grad(), w.grad(), c.bias ? b.grad() : Tensor()};
}

TEST(Conv2d, OneDnnMatchesReference) {
  std::vector<ConvCase> cases = grad_cases();
  // ResNet stem/layer shapes at a small batch.
  cases.push_back({{3, 1, 50, 50}, {16, 1, 7, 7}, false, {2, 2}, {3, 3}, {1, 1}});
  cases.push_back({{3, 16, 13, 13}, {16, 16, 3, 3}, false, {1, 1}, {1, 1}, {1, 1}});
  cases.push_back({{3, 16, 13, 13}, {32, 16, 3, 3}, false, {2, 2}, {1, 1}, {1, 1}});
  cases.push_back({{3, 16, 13, 13}, {32, 16, 1, 1}, false, {2, 2}, {0, 0}, {1, 1}});
  cases.push_back({{3, 32, 7, 7}, {32, 32, 3, 3}, true, {1, 1}, {1, 1}, {1, 1}});
  const char* what[] = {"y", "dx", "dweight", "dbias"};
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(conv_name(c));
    std::vector<Tensor> fast, ref32, ref64;
    {
      ImplGuard g("onednn");
      fast = conv_fwd_bwd(c, DType::Float32, 11);
    }
    {
      ImplGuard g("reference");
      ref32 = conv_fwd_bwd(c, DType::Float32, 11);
      ref64 = conv_fwd_bwd(c, DType::Float64, 11);
    }
    for (size_t i = 0; i < fast.size(); ++i) {
      if (!fast[i].defined()) continue;
      SCOPED_TRACE(what[i]);
      EXPECT_LT(rel_err(fast[i], ref64[i]), 1e-4);
      EXPECT_LT(rel_err(ref32[i], ref64[i]), 1e-4);
      EXPECT_LT(rel_err(fast[i], ref32[i]), 1e-4);
    }
  }
}

TEST(Conv2d, SavesOnlyWhatBackwardNeeds) {
  // x does not require grad: the weight alone is saved... and vice versa:
  // here we check the gradients that exist are right and the missing ones undefined.
  Tensor x = rand_double({2, 3, 5, 5}, 1);
  Tensor w = rand_double({4, 3, 3, 3}, 2).set_requires_grad(true);
  Tensor y = ops::conv2d(x, w, Tensor(), {1, 1}, {1, 1});
  ops::sum(y).backward();
  EXPECT_TRUE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined());
}

TEST(Conv2d, NoGradRecordsNothing) {
  Tensor x = rand_double({2, 3, 9, 9}, 1).set_requires_grad(true);
  Tensor w = rand_double({4, 3, 3, 3}, 2).set_requires_grad(true);
  Tensor g = rand_double({4}, 3).set_requires_grad(true);
  Tensor b = rand_double({4}, 4).set_requires_grad(true);
  Tensor rm = Tensor::zeros({4}, DType::Float64), rv = Tensor::ones({4}, DType::Float64);
  int64_t before = Node::live_count();
  {
    NoGradGuard ng;
    Tensor y = ops::conv2d(x, w, Tensor(), {1, 1}, {1, 1});
    y = ops::batch_norm(y, g, b, rm, rv, true, 0.1, 1e-5);
    y = ops::max_pool2d(y, {3, 3}, {2, 2}, {1, 1});
    y = ops::adaptive_avg_pool2d_1x1(y);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(Node::live_count(), before);
  }
  // Training-mode BN still updated the running stats under no-grad (as PyTorch).
  EXPECT_NE(rm.to_vector<double>()[0], 0.0);
}

TEST(Conv2d, ErrorMessagesNameBothShapes) {
  Tensor x = Tensor::zeros({2, 3, 8, 8});
  std::string m = message_of([&] { ops::conv2d(x, Tensor::zeros({4, 2, 3, 3})); });
  EXPECT_NE(m.find("conv2d"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 3, 8, 8)"), std::string::npos) << m;
  EXPECT_NE(m.find("(4, 2, 3, 3)"), std::string::npos) << m;
  EXPECT_NE(m.find("channel mismatch"), std::string::npos) << m;

  m = message_of([&] { ops::conv2d(x, Tensor::zeros({4, 3, 11, 11}), Tensor(), {1, 1}, {1, 1}); });
  EXPECT_NE(m.find("(2, 3, 8, 8)"), std::string::npos) << m;
  EXPECT_NE(m.find("(4, 3, 11, 11)"), std::string::npos) << m;
  EXPECT_NE(m.find("larger than the padded input"), std::string::npos) << m;

  m = message_of([&] { ops::conv2d(Tensor::zeros({3, 8, 8}), Tensor::zeros({4, 3, 3, 3})); });
  EXPECT_NE(m.find("(3, 8, 8)"), std::string::npos) << m;
  EXPECT_NE(m.find("(4, 3, 3, 3)"), std::string::npos) << m;
  EXPECT_NE(m.find("4-D"), std::string::npos) << m;

  m = message_of([&] { ops::conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({5})); });
  EXPECT_NE(m.find("(5,)"), std::string::npos) << m;
  EXPECT_NE(m.find("(4, 3, 3, 3)"), std::string::npos) << m;

  m = message_of([&] { ops::conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor(), {0, 1}); });
  EXPECT_NE(m.find("stride"), std::string::npos) << m;

  EXPECT_THROW(ops::conv2d(x, Tensor::zeros({4, 3, 3, 3}, DType::Float64)), Error);
}

// ---- batch_norm ------------------------------------------------------------------

TEST(BatchNorm, GradcheckTraining) {
  for (Shape xs : {Shape{4, 3, 3, 3}, Shape{5, 4}}) {
    SCOPED_TRACE(shape_str(xs));
    const int64_t c = xs[1];
    auto f = [&](const std::vector<Tensor>& t) {
      return ops::batch_norm(t[0], t[1], t[2], Tensor(), Tensor(), true, 0.1, 1e-5);
    };
    EXPECT_TRUE(gradcheck(f, {rand_double(xs, 1), rand_double({c}, 2, 0.5, 1.5), rand_double({c}, 3)}));
    // Without affine parameters.
    auto f2 = [&](const std::vector<Tensor>& t) {
      return ops::batch_norm(t[0], Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
    };
    EXPECT_TRUE(gradcheck(f2, {rand_double(xs, 4)}));
  }
}

TEST(BatchNorm, GradcheckEval) {
  Tensor rm = rand_double({3}, 5), rv = rand_double({3}, 6, 0.5, 2.0);
  auto f = [&](const std::vector<Tensor>& t) {
    return ops::batch_norm(t[0], t[1], t[2], rm, rv, false, 0.1, 1e-5);
  };
  EXPECT_TRUE(gradcheck(f, {rand_double({2, 3, 4, 4}, 1), rand_double({3}, 2), rand_double({3}, 3)}));
  // A frozen layer: only x requires grad (nothing but the stats is saved).
  Tensor gm = rand_double({3}, 2), bt = rand_double({3}, 3);
  auto f2 = [&](const std::vector<Tensor>& t) { return ops::batch_norm(t[0], gm, bt, rm, rv, false, 0.1, 1e-5); };
  EXPECT_TRUE(gradcheck(f2, {rand_double({2, 3, 4, 4}, 1)}));
}

// ---- bfloat16 inference convolution ------------------------------------------------
TEST(Conv2dBf16, InferenceIsCloseToFloat32AndRecordedConvsStayFloat32) {
  if (!backend_for(Device::cpu()).supports_bf16_conv())
    GTEST_SKIP() << "this CPU has no AVX512-BF16 (or oneDNN is switched off): no bfloat16 convolution to test";
  struct Case {
    Shape x, w;
    Pair stride, pad;
  };
  for (const Case& c : {Case{{8, 16, 13, 13}, {32, 16, 3, 3}, {1, 1}, {1, 1}},
                        Case{{6, 1, 50, 50}, {64, 1, 7, 7}, {2, 2}, {3, 3}},
                        Case{{5, 64, 13, 13}, {128, 64, 1, 1}, {2, 2}, {0, 0}}}) {
    SCOPED_TRACE(shape_str(c.x) + " " + shape_str(c.w));
    Tensor x = rand_double(c.x, 1).to(DType::Float32), w = rand_double(c.w, 2).to(DType::Float32);
    Tensor b = rand_double({c.w[0]}, 3).to(DType::Float32);
    Tensor y32, y16, yrec;
    {
      NoGradGuard ng;
      y32 = ops::conv2d(x, w, b, c.stride, c.pad);
      ConvBf16Guard bf(true);
      EXPECT_TRUE(conv_bf16_enabled());
      y16 = ops::conv2d(x, w, b, c.stride, c.pad);
    }
    EXPECT_FALSE(conv_bf16_enabled());
    const double scale = testing::max_abs_diff(y32, Tensor::zeros(y32.shape()));
    const double err = testing::max_abs_diff(y16, y32) / scale;
    EXPECT_GT(err, 0.0) << "the bfloat16 path did not run";
    EXPECT_LT(err, 2e-2) << "bfloat16 inputs keep 8 bits of mantissa";
    {
      ConvBf16Guard bf(true);
      Tensor xg = x.clone().set_requires_grad(true);
      yrec = ops::conv2d(xg, w, b, c.stride, c.pad);  // recorded for backward: float32
    }
    EXPECT_EQ(testing::max_abs_diff(yrec.detach(), y32), 0.0);
  }
}

// ---- batch_norm_relu and recomputed outputs ---------------------------------------
// The fused op feeds a convolution that saves its input, and the intermediate
// dies when f returns: with recompute, backward recomputes it (and the mask).
TEST(BatchNormRelu, GradcheckTrainingAndEvalWithAndWithoutRecompute) {
  Tensor rm = rand_double({3}, 5), rv = rand_double({3}, 6, 0.5, 2.0);
  for (bool training : {true, false})
    for (bool recompute : {false, true}) {
      SCOPED_TRACE(std::string(training ? "train" : "eval") + (recompute ? " recompute" : ""));
      auto f = [&](const std::vector<Tensor>& t) {
        Tensor y = ops::batch_norm_relu(t[0], t[1], t[2], training ? Tensor() : rm, training ? Tensor() : rv,
                                        training, 0.1, 1e-5, recompute);
        return ops::conv2d(y, t[3], Tensor(), {1, 1}, {1, 1});
      };
      EXPECT_TRUE(gradcheck(f, {rand_double({3, 3, 4, 4}, 1), rand_double({3}, 2, 0.5, 1.5),
                                rand_double({3}, 3, -0.3, 0.3), rand_double({2, 3, 3, 3}, 4)}));
    }
}

TEST(BatchNormRelu, RecomputedStemGradcheck) {
  // conv2d_recomputed -> batch_norm_relu(recompute) -> max_pool: nothing but
  // the input, the statistics and the pool indices is kept.
  auto f = [&](const std::vector<Tensor>& t) {
    Tensor c = ops::conv2d_recomputed(t[0], t[1], Tensor(), {2, 2}, {3, 3});
    Tensor y = ops::batch_norm_relu(c, t[2], t[3], Tensor(), Tensor(), true, 0.1, 1e-5, true);
    return ops::max_pool2d(y, {3, 3}, {2, 2}, {1, 1});
  };
  EXPECT_TRUE(gradcheck(f, {rand_double({2, 1, 9, 9}, 1), rand_double({4, 1, 7, 7}, 2),
                            rand_double({4}, 3, 0.5, 1.5), rand_double({4}, 4, -0.3, 0.3)}));
}

TEST(BatchNormRelu, MatchesBatchNormThenReluBitForBitAndUpdatesStatsOnce) {
  Tensor x0 = rand_double({6, 4, 5, 5}, 1).to(DType::Float32);
  Tensor w = rand_double({4, 4, 3, 3}, 2).to(DType::Float32);
  auto run = [&](int mode) {
    Tensor x = x0.clone().set_requires_grad(true);
    Tensor g = Tensor::ones({4}).set_requires_grad(true), b = Tensor::zeros({4}).set_requires_grad(true);
    Tensor rm = Tensor::zeros({4}), rv = Tensor::ones({4});
    Tensor y = mode == 0 ? ops::relu(ops::batch_norm(x, g, b, rm, rv, true, 0.1, 1e-5))
                         : ops::batch_norm_relu(x, g, b, rm, rv, true, 0.1, 1e-5, mode == 2);
    Tensor out = ops::conv2d(y, w.clone().set_requires_grad(true), Tensor(), {1, 1}, {1, 1});
    y = Tensor();
    ops::sum(ops::mul(out, out)).backward();
    return std::vector<Tensor>{out.detach(), x.grad(), g.grad(), b.grad(), rm, rv};
  };
  std::vector<Tensor> plain = run(0), fused = run(1), recomputed = run(2);
  for (size_t i = 0; i < plain.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(testing::max_abs_diff(fused[i], plain[i]), 0.0);
    EXPECT_EQ(testing::max_abs_diff(recomputed[i], plain[i]), 0.0);
  }
}

TEST(BatchNorm, RunningStatsFollowPyTorch) {
  // x (N=2, C=2, 1, 2): channel 0 holds {1, 2, 3, 6}, channel 1 holds {-1, 1, 0, 4}.
  std::vector<double> v{1, 2, -1, 1, 3, 6, 0, 4};
  for (const char* impl : {"onednn", "reference"}) {
    for (DType dt : {DType::Float32, DType::Float64}) {
      SCOPED_TRACE(str_cat(impl, " ", dtype_name(dt)));
      ImplGuard guard(impl);
      Tensor x = Tensor::from_vector(v, {2, 2, 1, 2}).to(dt);
      Tensor rm = Tensor::from_vector(std::vector<double>{0.5, -0.5}, {2}).to(dt);
      Tensor rv = Tensor::from_vector(std::vector<double>{2.0, 1.0}, {2}).to(dt);
      const double momentum = 0.1;
      ops::batch_norm(x, Tensor(), Tensor(), rm, rv, true, momentum, 1e-5);
      // mean0 = 3, biased var0 = (4+1+0+9)/4 = 3.5, unbiased = 14/3
      // mean1 = 1, biased var1 = (4+0+1+9)/4 = 3.5, unbiased = 14/3
      const double exp_m0 = 0.9 * 0.5 + 0.1 * 3.0, exp_m1 = 0.9 * -0.5 + 0.1 * 1.0;
      const double exp_v0 = 0.9 * 2.0 + 0.1 * 14.0 / 3.0, exp_v1 = 0.9 * 1.0 + 0.1 * 14.0 / 3.0;
      std::vector<double> m = rm.to(DType::Float64).to_vector<double>();
      std::vector<double> s = rv.to(DType::Float64).to_vector<double>();
      EXPECT_NEAR(m[0], exp_m0, 1e-6);
      EXPECT_NEAR(m[1], exp_m1, 1e-6);
      EXPECT_NEAR(s[0], exp_v0, 1e-5);
      EXPECT_NEAR(s[1], exp_v1, 1e-5);
      // Eval then uses exactly those statistics.
      Tensor y = ops::batch_norm(x, Tensor(), Tensor(), rm, rv, false, momentum, 1e-5);
      EXPECT_NEAR(y.to(DType::Float64).to_vector<double>()[0], (1.0 - exp_m0) / std::sqrt(exp_v0 + 1e-5), 1e-5);
    }
  }
}

TEST(BatchNorm, TrainingNormalisesWithBiasedVariance) {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 6}, {4, 1});
  Tensor y = ops::batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 0.0 + 1e-12);
  std::vector<double> vy = y.to_vector<double>();
  EXPECT_NEAR(vy[0], (1 - 3) / std::sqrt(3.5), 1e-9);
  EXPECT_NEAR(vy[3], (6 - 3) / std::sqrt(3.5), 1e-9);
}

// y, dx, dgamma, dbeta and the updated running stats.
std::vector<Tensor> bn_fwd_bwd(const Shape& xs, bool training, DType dt, uint64_t seed) {
  const int64_t c = xs[1];
  Tensor x = rand_double(xs, seed, -2.0, 3.0).to(dt).set_requires_grad(true);
  Tensor gm = rand_double({c}, seed + 1, 0.5, 1.5).to(dt).set_requires_grad(true);
  Tensor bt = rand_double({c}, seed + 2).to(dt).set_requires_grad(true);
  Tensor rm = rand_double({c}, seed + 3).to(dt), rv = rand_double({c}, seed + 4, 0.5, 2.0).to(dt);
  Tensor y = ops::batch_norm(x, gm, bt, rm, rv, training, 0.1, 1e-5);
  Tensor r = rand_double(y.shape(), seed + 5).to(dt);
  ops::sum(ops::mul(y, r)).backward();
  return {y.detach(), x.grad(), gm.grad(), bt.grad(), rm, rv};
}

TEST(BatchNorm, OneDnnMatchesReference) {
  const char* what[] = {"y", "dx", "dgamma", "dbeta", "running_mean", "running_var"};
  for (Shape xs : {Shape{8, 16, 13, 13}, Shape{6, 5, 7, 3}, Shape{32, 24}}) {
    for (bool training : {true, false}) {
      SCOPED_TRACE(str_cat(shape_str(xs), training ? " training" : " eval"));
      std::vector<Tensor> fast, loops32, ref32, ref64;
      {
        ImplGuard g("onednn");
        loops32 = bn_fwd_bwd(xs, training, DType::Float32, 21);  // the float32 default: loops
        setenv("IPSNET_ONEDNN_BN", "1", 1);                       // oneDNN's batch norm
        fast = bn_fwd_bwd(xs, training, DType::Float32, 21);
        unsetenv("IPSNET_ONEDNN_BN");
      }
      {
        ImplGuard g("reference");
        ref32 = bn_fwd_bwd(xs, training, DType::Float32, 21);
        ref64 = bn_fwd_bwd(xs, training, DType::Float64, 21);
      }
      for (size_t i = 0; i < fast.size(); ++i) {
        SCOPED_TRACE(what[i]);
        EXPECT_LT(rel_err(fast[i], ref64[i]), 1e-4);
        EXPECT_LT(rel_err(loops32[i], ref64[i]), 1e-4);
        EXPECT_LT(rel_err(ref32[i], ref64[i]), 1e-4);
      }
    }
  }
}

TEST(BatchNorm, ErrorMessages) {
  Tensor x = Tensor::zeros({4, 3, 5, 5});
  std::string m = message_of([&] { ops::batch_norm(x, Tensor::ones({4}), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); });
  EXPECT_NE(m.find("batch_norm"), std::string::npos) << m;
  EXPECT_NE(m.find("(4,)"), std::string::npos) << m;
  EXPECT_NE(m.find("(4, 3, 5, 5)"), std::string::npos) << m;
  m = message_of([&] { ops::batch_norm(Tensor::zeros({1, 3}), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); });
  EXPECT_NE(m.find("more than 1 value per channel"), std::string::npos) << m;
  m = message_of([&] { ops::batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false, 0.1, 1e-5); });
  EXPECT_NE(m.find("running_mean"), std::string::npos) << m;
  m = message_of([&] { ops::batch_norm(Tensor::zeros({4}), Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5); });
  EXPECT_NE(m.find("(4,)"), std::string::npos) << m;
}

// ---- pooling ---------------------------------------------------------------------

TEST(MaxPool2d, GradcheckDouble) {
  struct Case {
    Shape x;
    Pair k, s, p;
  };
  for (const Case& c : {Case{{2, 2, 7, 7}, {3, 3}, {2, 2}, {1, 1}}, Case{{1, 3, 6, 5}, {2, 2}, {2, 2}, {0, 0}},
                        Case{{2, 1, 5, 6}, {3, 2}, {1, 2}, {1, 1}}}) {
    SCOPED_TRACE(shape_str(c.x));
    auto f = [&](const std::vector<Tensor>& t) { return ops::max_pool2d(t[0], c.k, c.s, c.p); };
    EXPECT_TRUE(gradcheck(f, {rand_double(c.x, 7)}));
  }
}

TEST(MaxPool2d, ValuesIndicesAndTies) {
  // 1x1x4x4 of ones: every window ties; the first position wins (PyTorch).
  Tensor x = Tensor::ones({1, 1, 4, 4}, DType::Float64).set_requires_grad(true);
  Tensor y = ops::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  ops::sum(y).backward();
  // Windows start at (-1,-1), (-1,1), (1,-1), (1,1): first in-plane positions
  // (0,0), (0,1), (1,0), (1,1).
  std::vector<double> g = x.grad().to_vector<double>();
  std::vector<double> expect(16, 0.0);
  expect[0] = expect[1] = expect[4] = expect[5] = 1.0;
  EXPECT_EQ(g, expect);
}

TEST(MaxPool2d, NanPropagates) {
  std::vector<double> v(16, 0.0);
  v[5] = NAN;  // (1, 1): in the windows of outputs (0, 0), (0, 1), (1, 0), (1, 1) with 2x2 s1
  v[15] = 7.0;
  Tensor x = Tensor::from_vector(v, {1, 1, 4, 4}).set_requires_grad(true);
  Tensor y = ops::max_pool2d(x, {2, 2}, {1, 1});
  std::vector<double> vy = y.to_vector<double>();
  EXPECT_TRUE(std::isnan(vy[0]));
  EXPECT_TRUE(std::isnan(vy[4]));
  EXPECT_FALSE(std::isnan(vy[2]));
  EXPECT_EQ(vy[8], 7.0);
}

TEST(MaxPool2d, OneDnnInferenceMatchesLoops) {
  Tensor x = rand_double({4, 8, 25, 25}, 9).to(DType::Float32);
  Tensor a, b;
  {
    ImplGuard g("onednn");
    NoGradGuard ng;  // no indices: the oneDNN path
    a = ops::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  }
  {
    Tensor xr = x.clone().set_requires_grad(true);  // with indices: the loops
    b = ops::max_pool2d(xr, {3, 3}, {2, 2}, {1, 1}).detach();
  }
  EXPECT_EQ(a.shape(), (Shape{4, 8, 13, 13}));
  EXPECT_EQ(rel_err(a, b), 0.0);
}

TEST(MaxPool2d, ErrorMessages) {
  std::string m = message_of([] { ops::max_pool2d(Tensor::zeros({2, 3, 2, 2}), {5, 5}, {1, 1}); });
  EXPECT_NE(m.find("max_pool2d"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 3, 2, 2)"), std::string::npos) << m;
  EXPECT_NE(m.find("(5, 5)"), std::string::npos) << m;
  m = message_of([] { ops::max_pool2d(Tensor::zeros({2, 3, 8, 8}), {3, 3}, {2, 2}, {2, 2}); });
  EXPECT_NE(m.find("padding"), std::string::npos) << m;
  m = message_of([] { ops::max_pool2d(Tensor::zeros({3, 8, 8}), {3, 3}, {2, 2}); });
  EXPECT_NE(m.find("(3, 8, 8)"), std::string::npos) << m;
}

TEST(AdaptiveAvgPool, GradcheckAndValues) {
  auto f = [](const std::vector<Tensor>& t) { return ops::adaptive_avg_pool2d_1x1(t[0]); };
  EXPECT_TRUE(gradcheck(f, {rand_double({2, 3, 4, 5}, 3)}));
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 10, 20, 30, 40}, {1, 2, 2, 2});
  Tensor y = ops::adaptive_avg_pool2d_1x1(x);
  EXPECT_EQ(y.shape(), (Shape{1, 2, 1, 1}));
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{2.5, 25.0}));
  std::string m = message_of([] { ops::adaptive_avg_pool2d_1x1(Tensor::zeros({2, 3})); });
  EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
}

// A small ResNet-like stack end to end, float32 oneDNN vs float64 reference.
TEST(ConvStack, OneDnnMatchesDoubleReference) {
  auto run = [](DType dt) {
    Tensor x = rand_double({3, 1, 20, 20}, 1).to(dt).set_requires_grad(true);
    Tensor w1 = rand_double({8, 1, 7, 7}, 2, -0.3, 0.3).to(dt).set_requires_grad(true);
    Tensor g1 = rand_double({8}, 3, 0.5, 1.5).to(dt).set_requires_grad(true);
    Tensor b1 = rand_double({8}, 4).to(dt).set_requires_grad(true);
    Tensor w2 = rand_double({8, 8, 3, 3}, 5, -0.3, 0.3).to(dt).set_requires_grad(true);
    Tensor rm = Tensor::zeros({8}, dt), rv = Tensor::ones({8}, dt);
    Tensor y = ops::conv2d(x, w1, Tensor(), {2, 2}, {3, 3});
    y = ops::relu(ops::batch_norm(y, g1, b1, rm, rv, true, 0.1, 1e-5));
    y = ops::max_pool2d(y, {3, 3}, {2, 2}, {1, 1});
    y = ops::conv2d(y, w2, Tensor(), {1, 1}, {1, 1});
    y = ops::adaptive_avg_pool2d_1x1(y);
    Tensor r = rand_double(y.shape(), 6).to(dt);
    ops::sum(ops::mul(y, r)).backward();
    return std::vector<Tensor>{y.detach(), x.grad(), w1.grad(), g1.grad(), b1.grad(), w2.grad(), rm, rv};
  };
  std::vector<Tensor> fast, ref;
  {
    ImplGuard g("onednn");
    fast = run(DType::Float32);
  }
  {
    ImplGuard g("reference");
    ref = run(DType::Float64);
  }
  for (size_t i = 0; i < fast.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_LT(rel_err(fast[i], ref[i]), 1e-4);
  }
}

TEST(CpuConvImpl, SwitchValidatesNames) {
  EXPECT_THROW(set_cpu_conv_impl("mkl"), Error);
  ImplGuard g("reference");
  EXPECT_EQ(cpu_conv_impl(), "reference");
}

}  // namespace
}  // namespace ipsnet
