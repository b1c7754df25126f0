// Layers: shapes, PyTorch initialisation ranges, numeric gradient checks in double.
#include <gtest/gtest.h>

#include <cmath>

#include "layers/layers.h"
#include "tests/layers/module_gradcheck.h"

namespace ipsnet {
namespace {

using testing::module_gradcheck;
using testing::rand_double;

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to(DType::Float64).to_vector<double>()) m = std::max(m, std::fabs(v));
  return m;
}

TEST(Linear, ShapesAndPyTorchInitBounds) {
  Generator gen(1);
  Linear lin(LinearOptions(64, 10), gen);
  EXPECT_EQ(lin.weight_.shape(), (Shape{10, 64}));
  EXPECT_EQ(lin.bias_.shape(), (Shape{10}));
  double bound = 1.0 / std::sqrt(64.0);
  EXPECT_LE(max_abs(lin.weight_), bound);
  EXPECT_GT(max_abs(lin.weight_), 0.9 * bound);
  EXPECT_LE(max_abs(lin.bias_), bound);
  Tensor y = lin.forward(Tensor::zeros({2, 5, 64}));
  EXPECT_EQ(y.shape(), (Shape{2, 5, 10}));
  Linear nb(LinearOptions(4, 3).bias(false), gen);
  EXPECT_FALSE(nb.bias_.defined());
  EXPECT_EQ(nb.named_parameters().keys(), (std::vector<std::string>{"weight"}));
}

TEST(Linear, DeterministicForASeed) {
  Generator g1(5), g2(5), g3(6);
  Linear a(LinearOptions(8, 4), g1), b(LinearOptions(8, 4), g2), c(LinearOptions(8, 4), g3);
  EXPECT_EQ(a.weight_.to_vector<float>(), b.weight_.to_vector<float>());
  EXPECT_NE(a.weight_.to_vector<float>(), c.weight_.to_vector<float>());
}

TEST(Linear, Gradcheck) {
  Generator gen(2);
  Linear lin(LinearOptions(5, 3), gen);
  EXPECT_TRUE(module_gradcheck(lin, [&](const Tensor& x) { return lin.forward(x); }, rand_double({2, 4, 5}, 3)));
}

TEST(LayerNorm, GradcheckAffineAndPlain) {
  LayerNorm ln(LayerNormOptions(6).eps(1e-6));
  {
    NoGradGuard ng;
    ln.weight_.copy_(rand_double({6}, 4, 0.5, 1.5));
    ln.bias_.copy_(rand_double({6}, 5));
  }
  EXPECT_TRUE(module_gradcheck(ln, [&](const Tensor& x) { return ln.forward(x); }, rand_double({3, 6}, 6)));
  LayerNorm plain(LayerNormOptions(6).elementwise_affine(false));
  EXPECT_TRUE(plain.named_parameters().empty());
  EXPECT_TRUE(module_gradcheck(plain, [&](const Tensor& x) { return plain.forward(x); }, rand_double({3, 6}, 7)));
  EXPECT_THROW(plain.forward(Tensor::zeros({2, 5})), Error);
}

TEST(Conv2d, ShapesInitAndGradcheck) {
  Generator gen(3);
  Conv2d conv(Conv2dOptions(2, 3, 3).stride(2).padding(1).dilation(1), gen);
  double bound = 1.0 / std::sqrt(2.0 * 9.0);
  EXPECT_LE(max_abs(conv.weight_), bound);
  EXPECT_LE(max_abs(conv.bias_), bound);
  EXPECT_EQ(conv.forward(Tensor::zeros({1, 2, 7, 7})).shape(), (Shape{1, 3, 4, 4}));
  EXPECT_TRUE(module_gradcheck(conv, [&](const Tensor& x) { return conv.forward(x); }, rand_double({2, 2, 5, 5}, 8)));
  Conv2d dil(Conv2dOptions(1, 2, 3).dilation(2).padding(2).bias(false), gen);
  EXPECT_FALSE(dil.bias_.defined());
  EXPECT_TRUE(module_gradcheck(dil, [&](const Tensor& x) { return dil.forward(x); }, rand_double({1, 1, 6, 6}, 9)));
}

TEST(BatchNorm, BuffersAndDefaults) {
  BatchNorm2d bn(BatchNormOptions(3));
  EXPECT_EQ(bn.state_dict().keys(),
            (std::vector<std::string>{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}));
  EXPECT_EQ(bn.num_batches_tracked_.dtype(), DType::Int64);
  EXPECT_EQ(bn.num_batches_tracked_.dim(), 0);
  EXPECT_EQ(bn.running_var_.to_vector<float>(), (std::vector<float>{1, 1, 1}));
  EXPECT_DOUBLE_EQ(bn.options().momentum(), 0.1);
  EXPECT_DOUBLE_EQ(bn.options().eps(), 1e-5);
}

TEST(BatchNorm, TrainUpdatesStatsEvalUsesThem) {
  BatchNorm2d bn(BatchNormOptions(2));
  Generator g(11);
  Tensor x = Tensor::randn({4, 2, 3, 3}, g, 2.0, 3.0);
  bn.train();
  Tensor y = bn.forward(x);
  EXPECT_EQ(bn.num_batches_tracked_.item(), 1);
  // batch mean of channel 0 moved running_mean by momentum 0.1
  std::vector<float> xv = x.to_vector<float>();
  double m0 = 0;
  for (int n = 0; n < 4; ++n)
    for (int k = 0; k < 9; ++k) m0 += xv[static_cast<size_t>(n * 18 + k)];
  m0 /= 36;
  EXPECT_NEAR(bn.running_mean_.to_vector<float>()[0], 0.1 * m0, 1e-5);
  // output is normalised per channel
  EXPECT_NEAR(ops::mean(y).item(), 0.0, 1e-5);
  bn.eval();
  Tensor ye = bn.forward(x);
  EXPECT_EQ(bn.num_batches_tracked_.item(), 1);
  std::vector<float> rm = bn.running_mean_.to_vector<float>(), rv = bn.running_var_.to_vector<float>();
  EXPECT_NEAR(ye.to_vector<float>()[0], (xv[0] - rm[0]) / std::sqrt(rv[0] + 1e-5), 1e-4);
  // frozen statistics: batch statistics are not used or updated even in training
  bn.train();
  bn.freeze_stats(true);
  Tensor yf = bn.forward(x);
  EXPECT_EQ(bn.num_batches_tracked_.item(), 1);
  EXPECT_EQ(bn.running_mean_.to_vector<float>(), rm);
  EXPECT_TRUE(testing::all_close(yf, ye, 1e-6, 1e-6));
}

TEST(BatchNorm, Gradcheck2dAnd1d) {
  BatchNorm2d bn(BatchNormOptions(3));
  {
    NoGradGuard ng;
    bn.weight_.copy_(rand_double({3}, 12, 0.5, 1.5));
    bn.bias_.copy_(rand_double({3}, 13));
  }
  bn.train();
  EXPECT_TRUE(module_gradcheck(bn, [&](const Tensor& x) { return bn.forward(x); }, rand_double({2, 3, 2, 2}, 14)));
  bn.eval();
  EXPECT_TRUE(module_gradcheck(bn, [&](const Tensor& x) { return bn.forward(x); }, rand_double({2, 3, 2, 2}, 15)));
  BatchNorm1d b1(BatchNormOptions(4));
  EXPECT_TRUE(module_gradcheck(b1, [&](const Tensor& x) { return b1.forward(x); }, rand_double({5, 4}, 16)));
  EXPECT_THROW(b1.forward(Tensor::zeros({5, 3})), Error);
  EXPECT_THROW(bn.forward(Tensor::zeros({5, 3})), Error);
}

TEST(Dropout, TrainEvalAndGenerators) {
  Dropout d(DropoutOptions(0.5).seed(3));
  Tensor x = Tensor::ones({1000});
  d.eval();
  EXPECT_TRUE(d.forward(x).same(x));
  d.train();
  std::vector<float> a = d.forward(x).to_vector<float>();
  int zeros = 0;
  for (float v : a) {
    EXPECT_TRUE(v == 0.0f || std::fabs(v - 2.0f) < 1e-6);
    zeros += v == 0.0f;
  }
  EXPECT_GT(zeros, 400);
  EXPECT_LT(zeros, 600);
  Dropout d2(DropoutOptions(0.5).seed(3));
  EXPECT_EQ(d2.forward(x).to_vector<float>(), a);  // same seed, same mask
  Generator ext(99);
  Dropout d3(DropoutOptions(0.5), &ext);
  d3.forward(x);
  EXPECT_EQ(ext.offset(), 1000u);  // drew from the supplied generator
}

TEST(Pooling, MaxAndAdaptiveAvg) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, {1, 1, 4, 4});
  MaxPool2d mp(MaxPool2dOptions(2));
  EXPECT_EQ(mp.forward(x).to_vector<float>(), (std::vector<float>{6, 8, 14, 16}));
  MaxPool2d mp3(MaxPool2dOptions(3).stride(2).padding(1));
  EXPECT_EQ(mp3.forward(x).shape(), (Shape{1, 1, 2, 2}));
  AdaptiveAvgPool2d ap(true);
  Tensor y = ap.forward(x);
  EXPECT_EQ(y.shape(), (Shape{1, 1}));
  EXPECT_NEAR(y.item(), 8.5, 1e-6);
  EXPECT_EQ(AdaptiveAvgPool2d().forward(x).shape(), (Shape{1, 1, 1, 1}));
}

TEST(Sequential, NamesAndForward) {
  Generator gen(4);
  Sequential seq;
  auto lin = seq.push_back(std::make_shared<Linear>(LinearOptions(3, 4), gen));
  seq.push_back(std::make_shared<ReLU>());
  seq.push_back(std::make_shared<Identity>());
  seq.push_back(std::make_shared<Linear>(LinearOptions(4, 2), gen));
  EXPECT_EQ(seq.size(), 4u);
  EXPECT_EQ(seq.named_parameters().keys(), (std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias"}));
  EXPECT_TRUE(seq.named_parameters().at("0.weight").same(lin->weight_));
  EXPECT_EQ(seq.forward(Tensor::zeros({5, 3})).shape(), (Shape{5, 2}));
  EXPECT_TRUE(module_gradcheck(seq, [&](const Tensor& x) { return seq.forward(x); }, rand_double({3, 3}, 17)));
}

}  // namespace
}  // namespace ipsnet
