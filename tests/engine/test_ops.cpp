// Op semantics: topk, gather/scatter, reductions, softmax, losses, matmul.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/engine.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

using testing::all_close;

TEST(Ops, TopkTiesByLowerIndex) {
  Tensor x = Tensor::from_vector<float>({1, 3, 3, 2, 3, 0}, {1, 6});
  auto [v, i] = ops::topk(x, 3, 1);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 4}));
  EXPECT_EQ(v.to_vector<float>(), (std::vector<float>{3, 3, 3}));
  auto [v2, i2] = ops::topk(x, 2, 1, false);
  EXPECT_EQ(i2.to_vector<int64_t>(), (std::vector<int64_t>{5, 0}));
  // All equal (empty patches): the first k indices.
  Tensor z = Tensor::zeros({2, 5});
  EXPECT_EQ(ops::topk(z, 3, 1).second.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 2, 0, 1, 2}));
  // Along dim 0.
  Tensor y = Tensor::from_vector<float>({1, 5, 4, 2, 3, 6}, {3, 2});
  auto [v3, i3] = ops::topk(y, 2, 0);
  EXPECT_EQ(v3.shape(), (Shape{2, 2}));
  EXPECT_EQ(i3.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 2, 0}));
}

TEST(Ops, ArgmaxAndMax) {
  Tensor x = Tensor::from_vector<float>({1, 7, 7, 2, 0, -1}, {2, 3});
  EXPECT_EQ(ops::argmax(x, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 0}));
  auto [v, i] = ops::max(x, 0);
  EXPECT_EQ(v.to_vector<float>(), (std::vector<float>{2, 7, 7}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(ops::amax(x, {0, 1}).item(), 7.0);
}

TEST(Ops, GatherScatterIndexSelect) {
  Tensor x = Tensor::from_vector<float>({0, 1, 2, 10, 11, 12}, {2, 3});
  Tensor idx = Tensor::from_vector<int64_t>({2, 0, 1, 1}, {2, 2});
  EXPECT_EQ(ops::gather(x, 1, idx).to_vector<float>(), (std::vector<float>{2, 0, 11, 11}));
  Tensor s = ops::scatter_add(Tensor::zeros({2, 3}), 1, idx, Tensor::ones({2, 2}));
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{1, 0, 1, 0, 2, 0}));
  Tensor sel = ops::index_select(x, 1, Tensor::from_vector<int64_t>({2, 2, 0}, {3}));
  EXPECT_EQ(sel.to_vector<float>(), (std::vector<float>{2, 2, 0, 12, 12, 10}));
  // gather with an expanded index along a feature dim (the IPS memory update).
  Tensor emb = Tensor::from_vector<float>({0, 1, 10, 11, 20, 21}, {1, 3, 2});
  Tensor top = Tensor::from_vector<int64_t>({2, 0}, {1, 2});
  Tensor g = ops::gather(emb, 1, top.unsqueeze(-1).expand({1, 2, 2}).contiguous());
  EXPECT_EQ(g.to_vector<float>(), (std::vector<float>{20, 21, 0, 1}));
}

TEST(Ops, Reductions) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(ops::sum(x).item(), 21.0);
  EXPECT_EQ(ops::sum(x, {0}).to_vector<float>(), (std::vector<float>{5, 7, 9}));
  EXPECT_EQ(ops::sum(x, {1}, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(ops::mean(x, {1}).to_vector<float>(), (std::vector<float>{2, 5}));
  Tensor y = Tensor::ones({2, 3, 4, 5});
  EXPECT_EQ(ops::sum(y, {0, 2}).shape(), (Shape{3, 5}));
  EXPECT_EQ(ops::sum(y, {0, 2}).to_vector<float>()[0], 8.0f);
  EXPECT_EQ(ops::sum(y, {1, 2, 3}).to_vector<float>()[1], 60.0f);
  EXPECT_EQ(ops::sum_to(y, {3, 1, 5}).to_vector<float>()[0], 8.0f);
}

TEST(Ops, SoftmaxMatchesDefinition) {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, -1, 0, 1000}, {2, 3});
  Tensor s = ops::softmax(x, 1);
  std::vector<double> v = s.to_vector<double>();
  double z = std::exp(1) + std::exp(2) + std::exp(3);
  EXPECT_NEAR(v[0], std::exp(1) / z, 1e-12);
  EXPECT_NEAR(v[5], 1.0, 1e-12);  // stable for large inputs
  Tensor ls = ops::log_softmax(x, 1);
  EXPECT_NEAR(ls.to_vector<double>()[2], 3 - std::log(z), 1e-12);
  Tensor s0 = ops::softmax(x, 0);
  EXPECT_NEAR(s0.to_vector<double>()[0] + s0.to_vector<double>()[3], 1.0, 1e-12);
}

TEST(Ops, LossesMatchDefinitions) {
  Tensor logits = Tensor::from_vector<double>({1, 2, 0.5, -1, 0, 3}, {2, 3});
  Tensor t = Tensor::from_vector<int64_t>({1, 2}, {2});
  double l0 = -(2 - std::log(std::exp(1) + std::exp(2) + std::exp(0.5)));
  double l1 = -(3 - std::log(std::exp(-1) + std::exp(0) + std::exp(3)));
  EXPECT_NEAR(ops::cross_entropy(logits, t).item(), (l0 + l1) / 2, 1e-12);
  Tensor x = Tensor::from_vector<double>({-30, 0, 2}, {3});
  Tensor z = Tensor::from_vector<double>({0, 1, 1}, {3});
  auto bce = [](double xv, double zv) {
    double p = 1 / (1 + std::exp(-xv));
    return -(zv * std::log(p) + (1 - zv) * std::log(1 - p));
  };
  EXPECT_NEAR(ops::binary_cross_entropy_with_logits(x, z).item(),
              (bce(-30, 0) + bce(0, 1) + bce(2, 1)) / 3, 1e-12);
}

TEST(Ops, MatmulShapesAndTransposedViews) {
  Generator g(3);
  Tensor a = Tensor::randn({2, 3, 4, 5}, g, 0, 1, DType::Float64);
  Tensor b = Tensor::randn({5, 6}, g, 0, 1, DType::Float64);
  Tensor c = ops::matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 3, 4, 6}));
  // Reference by explicit loops.
  std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>(), cv = c.to_vector<double>();
  double ref = 0;
  for (int k = 0; k < 5; ++k) ref += av[static_cast<size_t>(1 * 60 + 2 * 20 + 3 * 5 + k)] * bv[static_cast<size_t>(k * 6 + 4)];
  EXPECT_NEAR(cv[static_cast<size_t>(1 * 72 + 2 * 24 + 3 * 6 + 4)], ref, 1e-12);
  // Batched with broadcast and a transposed operand.
  Tensor q = Tensor::randn({1, 2, 4, 3}, g, 0, 1, DType::Float64);
  Tensor k = Tensor::randn({5, 2, 7, 3}, g, 0, 1, DType::Float64);
  Tensor s = ops::matmul(q, k.transpose(-1, -2));
  EXPECT_EQ(s.shape(), (Shape{5, 2, 4, 7}));
  Tensor s_ref = ops::matmul(q.expand({5, 2, 4, 3}).contiguous(), k.transpose(-1, -2).contiguous());
  EXPECT_TRUE(all_close(s, s_ref, 1e-12, 1e-12));
  // Vector cases.
  Tensor v = Tensor::randn({3}, g, 0, 1, DType::Float64);
  EXPECT_EQ(ops::matmul(Tensor::randn({4, 3}, g, 0, 1, DType::Float64), v).shape(), (Shape{4}));
  EXPECT_EQ(ops::matmul(v, Tensor::randn({3, 2}, g, 0, 1, DType::Float64)).shape(), (Shape{2}));
  // float32 agrees with float64.
  Tensor c32 = ops::matmul(a.to(DType::Float32), b.to(DType::Float32));
  EXPECT_TRUE(all_close(c32, c, 1e-4, 1e-4));
}

TEST(Ops, CatAndStack) {
  Tensor a = Tensor::ones({2, 2}), b = Tensor::zeros({2, 3});
  Tensor c = ops::cat({a, b}, 1);
  EXPECT_EQ(c.shape(), (Shape{2, 5}));
  EXPECT_EQ(c.to_vector<float>()[1], 1.0f);
  EXPECT_EQ(c.to_vector<float>()[2], 0.0f);
  EXPECT_THROW(ops::cat({a, b}, 0), Error);
  EXPECT_EQ(ops::stack({a, a}, 0).shape(), (Shape{2, 2, 2}));
}

TEST(Ops, MaskedFillAndComparisons) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor m = Tensor::from_vector<int64_t>({0, 1}, {2});
  EXPECT_EQ(ops::masked_fill(x, m, -5).to_vector<float>(), (std::vector<float>{1, -5, 3, -5}));
  EXPECT_EQ(ops::gt(x, Tensor::scalar(2.0)).to_vector<float>(), (std::vector<float>{0, 0, 1, 1}));
}

TEST(Ops, DropoutIsSeededAndScaled) {
  Tensor x = Tensor::ones({1000});
  Generator g1(42), g2(42);
  Tensor a = ops::dropout(x, 0.25, true, g1), b = ops::dropout(x, 0.25, true, g2);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  int kept = 0;
  for (float v : a.to_vector<float>()) {
    if (v != 0) {
      EXPECT_FLOAT_EQ(v, 1.0f / 0.75f);
      ++kept;
    }
  }
  EXPECT_GT(kept, 680);
  EXPECT_LT(kept, 820);
  Generator g3(42);
  EXPECT_TRUE(ops::dropout(x, 0.25, false, g3).same(x));
}

TEST(Ops, LayerNormMatchesDefinition) {
  Tensor x = Tensor::from_vector<double>({1, 2, 3, 4, -1, 0, 1, 2}, {2, 4});
  Tensor y = ops::layer_norm(x, Tensor(), Tensor(), 1e-6);
  double mu = 2.5, var = 1.25;
  EXPECT_NEAR(y.to_vector<double>()[0], (1 - mu) / std::sqrt(var + 1e-6), 1e-9);
}

}  // namespace
}  // namespace ipsnet
