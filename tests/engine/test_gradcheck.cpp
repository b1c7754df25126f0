// Layer 1: numeric gradient checks in double for every differentiable op.
#include <gtest/gtest.h>

#include "engine/engine.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

using testing::gradcheck;
using testing::rand_double;
using V = std::vector<Tensor>;

TEST(Gradcheck, UnaryOps) {
  Tensor x = rand_double({3, 4}, 1, -2, 2);
  Tensor pos = rand_double({3, 4}, 2, 0.2, 2);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::relu(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::sigmoid(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::tanh(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::exp(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::log(in[0]); }, {pos}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::sqrt(in[0]); }, {pos}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::abs(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::neg(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::square(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::reciprocal(in[0]); }, {pos}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::pow(in[0], 2.5); }, {pos}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::clamp_min(in[0], 0.1); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::rsub(ops::mul(ops::add(in[0], 1.5), 2.0), 3.0); }, {x}));
}

TEST(Gradcheck, BinaryBroadcasting) {
  Tensor a = rand_double({2, 3, 4}, 3), b = rand_double({3, 1}, 4, 0.5, 1.5), c = rand_double({4}, 5);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::add(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::sub(in[0], in[1]); }, {a, c}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::mul(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::div(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::maximum(in[0], in[1]); }, {a, c}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::minimum(in[0], in[1]); }, {a, c}));
  // Same tensor used twice (gradient accumulation inside the graph).
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::mul(in[0], ops::add(in[0], in[1])); }, {a, c}));
}

TEST(Gradcheck, Reductions) {
  Tensor x = rand_double({2, 3, 4}, 6);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::sum(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::sum(in[0], {0, 2}); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::mean(in[0], {1}, true); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::mean(in[0]); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::max(in[0], 1).first; }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::min(in[0], 2, true).first; }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::amax(in[0], {0, 2}); }, {x}));
}

TEST(Gradcheck, Matmul) {
  Tensor a = rand_double({2, 3, 4}, 7), b = rand_double({4, 5}, 8), c = rand_double({2, 4, 5}, 9);
  Tensor q = rand_double({1, 2, 3, 4}, 10), k = rand_double({3, 2, 5, 4}, 11);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::matmul(in[0], in[1]); }, {a, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::matmul(in[0], in[1]); }, {a, c}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::matmul(in[0], in[1].transpose(-1, -2)); }, {q, k}));
  Tensor v = rand_double({4}, 12);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::matmul(in[0], in[1]); }, {a, v}));
  Tensor w = rand_double({5, 4}, 13), bias = rand_double({5}, 14);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::linear(in[0], in[1], in[2]); }, {a, w, bias}));
}

TEST(Gradcheck, SoftmaxAndLayerNorm) {
  Tensor x = rand_double({2, 3, 5}, 15, -2, 2);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::softmax(in[0], -1); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::softmax(in[0], 1); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::log_softmax(in[0], 2); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::log_softmax(in[0], 0); }, {x}));
  Tensor g = rand_double({5}, 16, 0.5, 1.5), b = rand_double({5}, 17);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::layer_norm(in[0], in[1], in[2], 1e-6); }, {x, g, b}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::layer_norm(in[0], Tensor(), Tensor(), 1e-5); }, {x}));
}

TEST(Gradcheck, ViewsAndIndexing) {
  Tensor x = rand_double({2, 3, 4}, 18);
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].permute({2, 0, 1}).reshape({4, 6}); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].slice(2, 1, 4, 2); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].select(1, 2); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].slice(0, 0, 1).expand({3, 3, 4}); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].transpose(0, 2).contiguous().unsqueeze(1).squeeze(1); }, {x}));
  Tensor y = rand_double({2, 2, 4}, 19);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::cat({in[0], in[1]}, 1); }, {x, y}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::stack({in[0], in[0]}, 0); }, {x}));
  Tensor idx = Tensor::from_vector<int64_t>({2, 0, 0, 1, 1, 1, 0, 2}, {2, 1, 4});
  EXPECT_TRUE(gradcheck([&](const V& in) { return ops::gather(in[0], 1, idx); }, {x}));
  Tensor src = rand_double({2, 1, 4}, 20);
  EXPECT_TRUE(gradcheck([&](const V& in) { return ops::scatter_add(in[0], 1, idx, in[1]); }, {x, src}));
  Tensor sel = Tensor::from_vector<int64_t>({3, 0, 3}, {3});
  EXPECT_TRUE(gradcheck([&](const V& in) { return ops::index_select(in[0], 2, sel); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::topk(in[0], 2, 1).first; }, {x}));
  Tensor mask = Tensor::from_vector<double>({1, 0, 0, 1}, {4});
  EXPECT_TRUE(gradcheck([&](const V& in) { return ops::masked_fill(in[0], mask, -3.0); }, {x}));
  EXPECT_TRUE(gradcheck([](const V& in) { return in[0].to(DType::Float32).to(DType::Float64); }, {x},
                        testing::GradcheckOptions{1e-3, 1e-4, 1e-3, 1234, {}}));
}

TEST(Gradcheck, DropoutAndLosses) {
  Tensor x = rand_double({4, 5}, 21);
  EXPECT_TRUE(gradcheck(
      [](const V& in) {
        Generator g(77);  // re-seeded: every evaluation sees the same mask
        return ops::dropout(in[0], 0.3, true, g);
      },
      {x}));
  Tensor t = Tensor::from_vector<int64_t>({0, 4, 2, 1}, {4});
  EXPECT_TRUE(gradcheck([&](const V& in) { return ops::cross_entropy(in[0], t); }, {x}));
  EXPECT_TRUE(gradcheck([&](const V& in) { return ops::nll_loss(ops::log_softmax(in[0], 1), t); }, {x}));
  Tensor z = rand_double({4, 5}, 22, 0, 1);
  EXPECT_TRUE(gradcheck([](const V& in) { return ops::binary_cross_entropy_with_logits(in[0], in[1]); }, {x, z}));
}

}  // namespace
}  // namespace ipsnet
