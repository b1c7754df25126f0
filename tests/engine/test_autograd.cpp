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
