// The optimizers the trainer offers (config key `optimizer`): SGD with
// momentum and Adam (L2 in the gradient) against torch.optim step by step
// (tests/fixtures/make_optim_golden.py), and their checkpoint state.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "engine/engine.h"
#include "engine/optim/optim.h"
#include "models/safetensors.h"

namespace ipsnet {
namespace {

struct Case {
  Tensor lr, w0, b0, gw, gb, w, b;
};

Case load_case(const std::string& name) {
  const std::string path = std::string(IPSNET_FIXTURES_DIR) + "/golden/optim.safetensors";
  EXPECT_TRUE(std::filesystem::exists(path)) << path;
  TensorDict fx = safetensors::load_tensors(path);
  auto at = [&](const char* k) { return fx.at(name + "." + k); };
  return {at("lr"), at("w0"), at("b0"), at("gw"), at("gb"), at("w"), at("b")};
}

double max_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.contiguous().to_vector<double>(), y = b.contiguous().to_vector<double>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

// Runs the fixture's steps: the given gradient set on each parameter, the
// step's learning rate; compares the parameters after every step.
void replay(const std::string& name, Optimizer& opt, Tensor& w, Tensor& b, const Case& c) {
  const std::vector<double> lrs = c.lr.to_vector<double>();
  for (size_t t = 0; t < lrs.size(); ++t) {
    opt.zero_grad();
    const int64_t s = static_cast<int64_t>(t);
    w.set_grad(c.gw.slice(0, s, s + 1).reshape({3, 4}).contiguous());
    b.set_grad(c.gb.slice(0, s, s + 1).reshape({4}).contiguous());
    opt.step(lrs[t]);
    EXPECT_LT(max_diff(w, c.w.slice(0, s, s + 1).reshape({3, 4})), 1e-12) << name << " step " << t + 1;
    EXPECT_LT(max_diff(b, c.b.slice(0, s, s + 1).reshape({4})), 1e-12) << name << " step " << t + 1;
  }
  EXPECT_EQ(opt.step_count(), static_cast<int64_t>(lrs.size()));
}

TEST(Optim, SgdWithMomentumMatchesTorch) {
  const Case c = load_case("sgd_momentum");
  Tensor w = c.w0.clone().set_requires_grad(true), b = c.b0.clone().set_requires_grad(true);
  SGDOptions o;
  o.momentum = 0.9;
  o.weight_decay = 0.01;
  SGD opt({{"w", w}, {"b", b}}, o);
  replay("sgd_momentum", opt, w, b, c);
}

TEST(Optim, SgdWithoutMomentumMatchesTorch) {
  const Case c = load_case("sgd_plain");
  Tensor w = c.w0.clone().set_requires_grad(true), b = c.b0.clone().set_requires_grad(true);
  SGDOptions o;
  o.momentum = 0.0;
  SGD opt({{"w", w}, {"b", b}}, o);
  replay("sgd_plain", opt, w, b, c);
  EXPECT_TRUE(opt.state().empty());  // no buffers without momentum
}

TEST(Optim, AdamWithL2MatchesTorch) {
  const Case c = load_case("adam");
  Tensor w = c.w0.clone().set_requires_grad(true), b = c.b0.clone().set_requires_grad(true);
  AdamWOptions o;
  o.weight_decay = 0.01;
  o.decoupled = false;
  AdamW opt({{"w", w}, {"b", b}}, o);
  replay("adam", opt, w, b, c);
}

TEST(Optim, SgdMomentumByHand) {
  // p = 1, loss = p^2 (g = 2p), momentum 0.5, lr 0.1, no decay.
  Tensor w = Tensor::from_vector<double>({1.0}, {1}).set_requires_grad(true);
  SGDOptions o;
  o.momentum = 0.5;
  SGD opt({{"w", w}}, o);
  double p = 1.0, buf = 0.0;
  for (int t = 1; t <= 4; ++t) {
    opt.zero_grad();
    ops::sum(ops::square(w)).backward();
    buf = 0.5 * buf + 2 * p;
    p -= 0.1 * buf;
    opt.step(0.1);
    EXPECT_NEAR(w.to_vector<double>()[0], p, 1e-15) << "step " << t;
  }
}

TEST(Optim, SgdStateRoundTripsAndResumesExactly) {
  const Case c = load_case("sgd_momentum");
  SGDOptions o;
  o.momentum = 0.9;
  o.weight_decay = 0.01;
  Tensor w1 = c.w0.clone().set_requires_grad(true), b1 = c.b0.clone().set_requires_grad(true);
  SGD first({{"w", w1}, {"b", b1}}, o);
  const std::vector<double> lrs = c.lr.to_vector<double>();
  auto step = [&](SGD& opt, Tensor& w, Tensor& b, int64_t t) {
    opt.zero_grad();
    w.set_grad(c.gw.slice(0, t, t + 1).reshape({3, 4}).contiguous());
    b.set_grad(c.gb.slice(0, t, t + 1).reshape({4}).contiguous());
    opt.step(lrs[static_cast<size_t>(t)]);
  };
  for (int64_t t = 0; t < 3; ++t) step(first, w1, b1, t);
  auto st = first.state();
  ASSERT_EQ(st.size(), 2u);
  EXPECT_EQ(st[0].first, "w.momentum_buffer");
  // A second optimizer continues from the saved state (copies, as a checkpoint would).
  std::vector<std::pair<std::string, Tensor>> saved;
  for (auto& [n, t] : st) saved.emplace_back(n, t.clone());
  Tensor w2 = w1.detach().clone().set_requires_grad(true), b2 = b1.detach().clone().set_requires_grad(true);
  SGD second({{"w", w2}, {"b", b2}}, o);
  second.load_state(saved, first.step_count());
  for (int64_t t = 3; t < 6; ++t) step(second, w2, b2, t);
  EXPECT_LT(max_diff(w2, c.w.slice(0, 5, 6).reshape({3, 4})), 1e-12);
  EXPECT_EQ(second.step_count(), 6);
  // A missing buffer is one clear line.
  SGD third({{"w", w2}, {"b", b2}}, o);
  try {
    third.load_state({}, 3);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w.momentum_buffer missing from the checkpoint"), std::string::npos)
        << e.what();
  }
}

TEST(Optim, SgdRejectsBadMomentum) {
  Tensor w = Tensor::zeros({2}, DType::Float32, Device::cpu()).set_requires_grad(true);
  SGDOptions o;
  o.momentum = -0.1;
  EXPECT_THROW(SGD({{"w", w}}, o), Error);
  o.momentum = 1.0;
  EXPECT_THROW(SGD({{"w", w}}, o), Error);
}

}  // namespace
}  // namespace ipsnet
