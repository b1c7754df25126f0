// Autograd behaviour: accumulation, no-grad, node release, error paths.
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

TEST(Autograd, LeafGradientsAccumulate) {
  Tensor w = Tensor::from_vector<float>({1, 2, 3}, {3}).set_requires_grad(true);
  ops::sum(ops::mul(w, w)).backward();
  EXPECT_EQ(w.grad().to_vector<float>(), (std::vector<float>{2, 4, 6}));
  ops::sum(w).backward();
  EXPECT_EQ(w.grad().to_vector<float>(), (std::vector<float>{3, 5, 7}));
  w.zero_grad();
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, NonScalarBackwardNeedsGradient) {
  Tensor w = Tensor::ones({2, 2}).set_requires_grad(true);
  Tensor y = ops::mul(w, 3.0);
  try {
    y.backward();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scalar"), std::string::npos) << e.what();
  }
  y.backward(Tensor::ones({2, 2}));
  EXPECT_EQ(w.grad().to_vector<float>()[0], 3.0f);
}

TEST(Autograd, InPlaceChangeOfSavedTensorIsAnError) {
  Tensor w = Tensor::ones({3}).set_requires_grad(true);
  Tensor x = Tensor::ones({3});
  Tensor y = ops::sum(ops::mul(w, x));  // saves x
  x.fill_(2.0);
  try {
    y.backward();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("modified in place"), std::string::npos) << e.what();
  }
  EXPECT_THROW(w.fill_(0.0), Error);  // leaf that requires grad
  {
    NoGradGuard ng;
    w.fill_(0.0);  // allowed under no-grad (optimizer updates)
  }
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor w = Tensor::ones({4, 4}).set_requires_grad(true);
  int64_t before = Node::live_count();
  {
    NoGradGuard ng;
    Tensor y = ops::relu(ops::matmul(w, w));
    y = ops::softmax(y, 1);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(Node::live_count(), before);
  }
  EXPECT_TRUE(grad_enabled());
}

TEST(Autograd, NodesAreReleasedAfterBackward) {
  Tensor w = Tensor::ones({64, 64}).set_requires_grad(true);
  Tensor x = Tensor::ones({64, 64});
  int64_t base_bytes = memory_stats().allocated_bytes;
  Tensor loss = ops::sum(ops::sigmoid(ops::matmul(x, w)));
  EXPECT_GT(memory_stats().allocated_bytes, base_bytes);
  loss.backward();
  // Saved activations are freed: only the gradient of w and loss remain.
  int64_t extra = memory_stats().allocated_bytes - base_bytes;
  EXPECT_LE(extra, static_cast<int64_t>(64 * 64 * 4 + 64));
  EXPECT_THROW(loss.backward(), Error);  // graph was freed
}

TEST(Autograd, RetainGraphAllowsSecondBackward) {
  Tensor w = Tensor::from_vector<double>({2}, {1}).set_requires_grad(true);
  Tensor y = ops::sum(ops::mul(w, w));
  y.backward(Tensor(), true);
  y.backward();
  EXPECT_DOUBLE_EQ(w.grad().item(), 8.0);
}

TEST(Autograd, DetachCutsHistory) {
  Tensor w = Tensor::ones({2}).set_requires_grad(true);
  Tensor y = ops::mul(w, 2.0).detach();
  EXPECT_FALSE(y.requires_grad());
  EXPECT_THROW(y.backward(), Error);
}

TEST(Autograd, DeepChainIsIterative) {
  // A long chain must not overflow the stack.
  Tensor w = Tensor::ones({1}).set_requires_grad(true);
  Tensor y = w;
  for (int i = 0; i < 20000; ++i) y = ops::add(y, 1.0);
  ops::sum(y).backward();
  EXPECT_EQ(w.grad().item(), 1.0);
}

TEST(Autograd, BranchWithoutGradientStillCompletes) {
  Tensor a = Tensor::ones({3}).set_requires_grad(true);
  Tensor b = Tensor::ones({3}).set_requires_grad(true);
  auto [v, i] = ops::topk(ops::add(a, b), 2);
  ops::sum(v).backward();
  EXPECT_EQ(a.grad().to_vector<float>(), (std::vector<float>{1, 1, 0}));
}

}  // namespace
}  // namespace ipsnet

namespace ipsnet {
namespace {

// A recipe that counts its runs: y = 2 x.
struct TwiceRecompute : Recompute {
  SavedTensor x;
  mutable int runs = 0;
  Tensor run() const override {
    ++runs;
    return ops::mul(x.unpack("twice"), 2.0);
  }
};

Tensor twice_recomputed(const Tensor& x, std::shared_ptr<TwiceRecompute>* recipe) {
  Tensor y = ops::mul(x, 2.0);
  *recipe = std::make_shared<TwiceRecompute>();
  (*recipe)->x = SavedTensor(x.detach());
  set_recompute(y, *recipe);
  return y;
}

TEST(Recompute, SavedOutputIsRecomputedOnlyWhenFreed) {
  Tensor x = Tensor::from_vector<float>({1, -2, 3}, {3}).set_requires_grad(true);
  std::shared_ptr<TwiceRecompute> recipe;
  Tensor y = twice_recomputed(x, &recipe);
  Tensor z = ops::mul(y, y);  // saves y twice: only the recipe is kept
  y = Tensor();
  ops::sum(z).backward();
  EXPECT_GE(recipe->runs, 1);
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{8, -16, 24}));  // d(4x^2)/dx

  // While the output is alive, unpack returns it and nothing runs.
  Tensor x2 = Tensor::from_vector<float>({1, 2}, {2}).set_requires_grad(true);
  std::shared_ptr<TwiceRecompute> r2;
  Tensor y2 = twice_recomputed(x2, &r2);
  ops::sum(ops::mul(y2, y2)).backward();
  EXPECT_EQ(r2->runs, 0);
}

TEST(Recompute, InPlaceChangeBeforeSavingKeepsTheTensorAndAfterSavingIsCaught) {
  Tensor x = Tensor::from_vector<float>({1, 2}, {2}).set_requires_grad(true);
  std::shared_ptr<TwiceRecompute> recipe;
  Tensor y = twice_recomputed(x, &recipe).detach();
  y.storage()->bump_version();  // as an in-place write would: the recipe no longer describes y
  SavedTensor s(y);
  EXPECT_FALSE(s.recomputed());
  y = Tensor();
  EXPECT_EQ(s.unpack("test").to_vector<float>(), (std::vector<float>{2, 4}));

  Tensor y2 = twice_recomputed(x, &recipe).detach();
  SavedTensor s2(y2);
  EXPECT_TRUE(s2.recomputed());
  y2.storage()->bump_version();
  EXPECT_THROW(s2.unpack("test"), Error);
}

}  // namespace
}  // namespace ipsnet
