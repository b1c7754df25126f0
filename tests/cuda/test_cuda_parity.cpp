// CPU-versus-CUDA parity for every backend primitive, forward and backward,
// plus a ResNet training step. Every test skips, naming the reason, when no
// CUDA device is usable (the skip shows in the test summary).
#include <gtest/gtest.h>

#include <functional>

#include "engine/backend/device_select.h"
#include "engine/engine.h"
#include "models/resnet.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

#define IPSNET_REQUIRE_CUDA()                                                               \
  do {                                                                                      \
    const DeviceProbe& probe_ = probe_devices();                                            \
    if (probe_.count == 0) GTEST_SKIP() << "no CUDA device: " << probe_.why_none;           \
  } while (0)

const Device kGpu = Device::cuda(0);

Tensor randf(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return testing::rand_double(s, seed, lo, hi).to(DType::Float32);
}

/// Runs f on CPU copies and CUDA copies of the inputs (float32, requiring
/// grad where `grad` says so), backpropagates sum(r * y) with the same r, and
/// compares the outputs and every input gradient.
void check_parity(const std::string& what, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                  const std::vector<Tensor>& inputs, const std::vector<bool>& grad, double atol = 1e-4,
                  double rtol = 1e-4) {
  SCOPED_TRACE(what);
  std::vector<Tensor> cpu_in, gpu_in;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor c = inputs[i].clone().detach();
    Tensor g = inputs[i].to(kGpu).detach();
    if (i < grad.size() && grad[i]) {
      c.set_requires_grad(true);
      g.set_requires_grad(true);
    }
    cpu_in.push_back(c);
    gpu_in.push_back(g);
  }
  Tensor yc = f(cpu_in), yg = f(gpu_in);
  ASSERT_EQ(yg.device(), kGpu);
  EXPECT_TRUE(testing::all_close(yg.to(Device::cpu()), yc, atol, rtol)) << "forward";
  if (!yc.requires_grad()) return;
  Tensor r = randf(yc.shape(), 99);
  ops::sum(ops::mul(yc, r)).backward();
  ops::sum(ops::mul(yg, r.to(kGpu))).backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i >= grad.size() || !grad[i]) continue;
    ASSERT_TRUE(gpu_in[i].grad().defined()) << "input " << i;
    EXPECT_TRUE(testing::all_close(gpu_in[i].grad().to(Device::cpu()), cpu_in[i].grad(), atol, rtol))
        << "gradient of input " << i;
  }
}

TEST(CudaParity, CopyFillAndTransfers) {
  IPSNET_REQUIRE_CUDA();
  // Larger than one pinned staging buffer, so both directions pipeline.
  Tensor x = randf({3, 1 << 20}, 1);
  Tensor g = x.to(kGpu);
  EXPECT_TRUE(testing::all_close(g.to(Device::cpu()), x, 0, 0));
  // Strided copy (transpose), dtype conversion, fill of a strided view.
  Tensor t = g.transpose(0, 1).contiguous();
  EXPECT_TRUE(testing::all_close(t.to(Device::cpu()), x.transpose(0, 1).contiguous(), 0, 0));
  Tensor i64 = Tensor::arange(100, DType::Int64, kGpu).to(DType::Float32);
  EXPECT_TRUE(testing::all_close(i64.to(Device::cpu()), Tensor::arange(100, DType::Float32), 0, 0));
  Tensor z = Tensor::zeros({4, 6}, DType::Float32, kGpu);
  {
    NoGradGuard ng;
    z.slice(1, 0, 6, 2).fill_(3.0);
  }
  Tensor zc = Tensor::zeros({4, 6});
  zc.slice(1, 0, 6, 2).fill_(3.0);
  EXPECT_TRUE(testing::all_close(z.to(Device::cpu()), zc, 0, 0));
}

TEST(CudaParity, UnaryOps) {
  IPSNET_REQUIRE_CUDA();
  Tensor x = randf({7, 33}, 2, 0.1, 2.0);  // positive: log, sqrt, pow
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  std::vector<std::pair<std::string, F>> fs = {
      {"relu", [](auto& v) { return ops::relu(ops::add(v[0], -1.0)); }},
      {"sigmoid", [](auto& v) { return ops::sigmoid(v[0]); }},
      {"tanh", [](auto& v) { return ops::tanh(v[0]); }},
      {"exp", [](auto& v) { return ops::exp(v[0]); }},
      {"log", [](auto& v) { return ops::log(v[0]); }},
      {"sqrt", [](auto& v) { return ops::sqrt(v[0]); }},
      {"neg", [](auto& v) { return ops::neg(v[0]); }},
      {"abs", [](auto& v) { return ops::abs(ops::add(v[0], -1.0)); }},
      {"mul_scalar", [](auto& v) { return ops::mul(v[0], 2.5); }},
      {"pow", [](auto& v) { return ops::pow(v[0], 1.7); }},
      {"square", [](auto& v) { return ops::square(v[0]); }},
      {"rsub", [](auto& v) { return ops::rsub(v[0], 3.0); }},
      {"reciprocal", [](auto& v) { return ops::reciprocal(v[0]); }},
      {"clamp_min", [](auto& v) { return ops::clamp_min(v[0], 1.0); }},
  };
  for (auto& kv : fs) check_parity(kv.first, kv.second, {x}, {true});
}

TEST(CudaParity, BinaryBroadcastAndCompare) {
  IPSNET_REQUIRE_CUDA();
  Tensor a = randf({4, 1, 5}, 3), b = randf({3, 1}, 4, 0.5, 1.5);
  check_parity("add", [](auto& v) { return ops::add(v[0], v[1]); }, {a, b}, {true, true});
  check_parity("sub", [](auto& v) { return ops::sub(v[0], v[1]); }, {a, b}, {true, true});
  check_parity("mul", [](auto& v) { return ops::mul(v[0], v[1]); }, {a, b}, {true, true});
  check_parity("div", [](auto& v) { return ops::div(v[0], v[1]); }, {a, b}, {true, true});
  check_parity("maximum", [](auto& v) { return ops::maximum(v[0], v[1]); }, {a, b}, {true, true});
  check_parity("minimum", [](auto& v) { return ops::minimum(v[0], v[1]); }, {a, b}, {true, true});
  check_parity("gt", [](auto& v) { return ops::gt(v[0], v[1]); }, {a, b}, {false, false});
  check_parity("eq", [](auto& v) { return ops::eq(v[0], v[0]); }, {a}, {false});
  Tensor t = randf({6, 5}, 5, 0.0, 1.0);
  check_parity("bce", [](auto& v) { return ops::binary_cross_entropy_with_logits(v[0], v[1]); }, {randf({6, 5}, 6), t},
               {true, false});
  Tensor mask = ops::gt(randf({4, 3, 5}, 7), Tensor::scalar(0.0));
  check_parity("masked_fill", [](auto& v) { return ops::masked_fill(v[0], v[1], -7.0); }, {randf({4, 3, 5}, 8), mask},
               {true, false});
}

TEST(CudaParity, Reductions) {
  IPSNET_REQUIRE_CUDA();
  Tensor x = randf({5, 300, 7}, 9);
  check_parity("sum all", [](auto& v) { return ops::sum(v[0]); }, {x}, {true}, 1e-3);
  check_parity("sum dim 1", [](auto& v) { return ops::sum(v[0], {1}); }, {x}, {true});
  check_parity("mean dim 2", [](auto& v) { return ops::mean(v[0], {2}); }, {x}, {true});
  check_parity("amax dim 1", [](auto& v) { return ops::amax(v[0], {1}); }, {x}, {true});
  for (int64_t dim : {1, 2}) {
    auto cm = ops::max(x, dim), gm = ops::max(x.to(kGpu), dim);
    EXPECT_TRUE(testing::all_close(gm.first.to(Device::cpu()), cm.first, 0, 0));
    EXPECT_TRUE(testing::all_close(gm.second.to(Device::cpu()), cm.second, 0, 0));
    auto cn = ops::min(x, dim), gn = ops::min(x.to(kGpu), dim);
    EXPECT_TRUE(testing::all_close(gn.second.to(Device::cpu()), cn.second, 0, 0));
  }
  // Ties go to the lower index on both devices.
  Tensor ties = Tensor::from_vector<float>({1, 3, 3, 0, 3, 2}, {1, 6});
  EXPECT_EQ(ops::argmax(ties.to(kGpu), 1).item(), 1.0);
}

TEST(CudaParity, MatmulLinearAndBatched) {
  IPSNET_REQUIRE_CUDA();
  check_parity("matmul", [](auto& v) { return ops::matmul(v[0], v[1]); }, {randf({17, 33}, 10), randf({33, 9}, 11)},
               {true, true});
  check_parity("batched matmul", [](auto& v) { return ops::matmul(v[0], v[1]); },
               {randf({3, 5, 17, 8}, 12), randf({3, 5, 8, 6}, 13)}, {true, true});
  check_parity("matmul transposed view", [](auto& v) { return ops::matmul(v[0].transpose(0, 1), v[1]); },
               {randf({33, 17}, 14), randf({33, 9}, 15)}, {true, true});
  check_parity("linear", [](auto& v) { return ops::linear(v[0], v[1], v[2]); },
               {randf({4, 10, 64}, 16), randf({32, 64}, 17), randf({32}, 18)}, {true, true, true});
  check_parity("vector", [](auto& v) { return ops::matmul(v[0], v[1]); }, {randf({1, 7}, 19), randf({7, 1}, 20)},
               {true, true});
}

TEST(CudaParity, SoftmaxAndLayerNorm) {
  IPSNET_REQUIRE_CUDA();
  Tensor x = randf({2, 4, 3, 130}, 21, -4, 4);
  check_parity("softmax last", [](auto& v) { return ops::softmax(v[0], -1); }, {x}, {true});
  check_parity("softmax dim 1", [](auto& v) { return ops::softmax(v[0], 1); }, {x}, {true});
  check_parity("log_softmax last", [](auto& v) { return ops::log_softmax(v[0], -1); }, {x}, {true});
  check_parity("log_softmax dim 2", [](auto& v) { return ops::log_softmax(v[0], 2); }, {x}, {true});
  check_parity("cross_entropy",
               [](auto& v) { return ops::cross_entropy(v[0], v[1]); },
               {randf({8, 10}, 22), Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 9}, {8})}, {true, false});
  check_parity("layer_norm", [](auto& v) { return ops::layer_norm(v[0], v[1], v[2], 1e-5); },
               {randf({6, 5, 300}, 23), randf({300}, 24), randf({300}, 25)}, {true, true, true}, 2e-4, 2e-4);
  check_parity("layer_norm no affine", [](auto& v) { return ops::layer_norm(v[0], Tensor(), Tensor(), 1e-5); },
               {randf({9, 40}, 26)}, {true});
}

TEST(CudaParity, Indexing) {
  IPSNET_REQUIRE_CUDA();
  Tensor x = randf({3, 10, 4}, 27);
  std::vector<int64_t> iv;
  for (int i = 0; i < 3 * 6 * 4; ++i) iv.push_back((i * 7) % 10);
  Tensor idx = Tensor::from_vector<int64_t>(iv, {3, 6, 4});
  check_parity("gather", [&](auto& v) { return ops::gather(v[0], 1, v[1]); }, {x, idx}, {true, false});
  check_parity("scatter_add", [&](auto& v) { return ops::scatter_add(v[0], 1, v[1], v[2]); },
               {x, idx, randf({3, 6, 4}, 28)}, {true, false, true});
  Tensor sel = Tensor::from_vector<int64_t>({9, 0, 3, 3}, {4});
  check_parity("index_select", [&](auto& v) { return ops::index_select(v[0], 1, v[1]); }, {x, sel}, {true, false});
  // Out-of-range indices are errors on CUDA too.
  Tensor bad = Tensor::from_vector<int64_t>({0, 10}, {2});
  EXPECT_THROW(ops::index_select(x.to(kGpu), 1, bad.to(kGpu)), Error);
}

TEST(CudaParity, TopkOverCandidates) {
  IPSNET_REQUIRE_CUDA();
  // M+I candidates per row, with ties (many equal scores) and a NaN.
  for (int64_t n : {7, 200, 5000, 70000}) {
    SCOPED_TRACE(n);
    Tensor x = randf({3, n}, 29 + n, 0, 1);
    {
      NoGradGuard ng;
      x.narrow(1, 0, n / 2).fill_(0.25);  // ties
    }
    for (bool largest : {true, false}) {
      const int64_t k = std::min<int64_t>(n, 50);
      auto c = ops::topk(x, k, -1, largest);
      auto g = ops::topk(x.to(kGpu), k, -1, largest);
      EXPECT_TRUE(testing::all_close(g.first.to(Device::cpu()), c.first, 0, 0));
      EXPECT_TRUE(testing::all_close(g.second.to(Device::cpu()), c.second, 0, 0));
    }
  }
}

TEST(CudaParity, DropoutDrawsTheSameMasks) {
  IPSNET_REQUIRE_CUDA();
  Tensor x = Tensor::ones({1000, 37});
  Generator gc(1234), gg(1234);
  Tensor yc = ops::dropout(x, 0.3, true, gc);
  Tensor yg = ops::dropout(x.to(kGpu), 0.3, true, gg);
  EXPECT_TRUE(testing::all_close(yg.to(Device::cpu()), yc, 0, 0));
  EXPECT_EQ(gc.offset(), gg.offset());
}

TEST(CudaParity, AdamWUpdate) {
  IPSNET_REQUIRE_CUDA();
  Tensor p = randf({1000}, 40), g = randf({1000}, 41), m = randf({1000}, 42, 0, 0.1), v = randf({1000}, 43, 0, 0.1);
  Tensor pg = p.to(kGpu), gg = g.to(kGpu), mg = m.to(kGpu), vg = v.to(kGpu);
  for (int64_t step = 1; step <= 3; ++step) {
    backend_for(Device::cpu()).adamw(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
    backend_for(kGpu).adamw(pg, gg, mg, vg, 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
  }
  EXPECT_TRUE(testing::all_close(pg.to(Device::cpu()), p, 1e-6, 1e-5));
  EXPECT_TRUE(testing::all_close(vg.to(Device::cpu()), v, 1e-7, 1e-5));
}

TEST(CudaParity, ConvBatchNormPooling) {
  IPSNET_REQUIRE_CUDA();
  check_parity("conv2d", [](auto& v) { return ops::conv2d(v[0], v[1], v[2], {2, 1}, {1, 0}); },
               {randf({2, 3, 11, 9}, 50), randf({5, 3, 3, 3}, 51), randf({5}, 52)}, {true, true, true}, 2e-4, 2e-4);
  check_parity("conv2d dilated", [](auto& v) { return ops::conv2d(v[0], v[1], Tensor(), {1, 1}, {2, 2}, {2, 2}); },
               {randf({1, 4, 8, 8}, 53), randf({6, 4, 3, 3}, 54)}, {true, true}, 2e-4, 2e-4);
  Tensor rm = Tensor::zeros({4}), rv = Tensor::ones({4});
  Tensor rmg = rm.to(kGpu), rvg = rv.to(kGpu);
  Tensor x = randf({3, 4, 5, 6}, 55), gamma = randf({4}, 56), beta = randf({4}, 57);
  check_parity("batch_norm train",
               [&](auto& v) {
                 const bool gpu = v[0].device().is_cuda();
                 return ops::batch_norm(v[0], v[1], v[2], gpu ? rmg : rm, gpu ? rvg : rv, true, 0.1, 1e-5);
               },
               {x, gamma, beta}, {true, true, true}, 2e-4, 2e-4);
  EXPECT_TRUE(testing::all_close(rmg.to(Device::cpu()), rm, 1e-6, 1e-5));
  EXPECT_TRUE(testing::all_close(rvg.to(Device::cpu()), rv, 1e-6, 1e-5));
  check_parity("batch_norm eval",
               [&](auto& v) {
                 const bool gpu = v[0].device().is_cuda();
                 return ops::batch_norm(v[0], v[1], v[2], gpu ? rmg : rm, gpu ? rvg : rv, false, 0.1, 1e-5);
               },
               {x, gamma, beta}, {true, true, true}, 2e-4, 2e-4);
  check_parity("max_pool2d", [](auto& v) { return ops::max_pool2d(v[0], {3, 3}, {2, 2}, {1, 1}); },
               {randf({2, 3, 9, 10}, 58)}, {true});
  check_parity("adaptive_avg_pool2d_1x1", [](auto& v) { return ops::adaptive_avg_pool2d_1x1(v[0]); },
               {randf({2, 3, 9, 10}, 59)}, {true});
}

TEST(CudaParity, CutPatches) {
  IPSNET_REQUIRE_CUDA();
  Tensor img = randf({2, 3, 50, 41}, 70);
  Tensor idx = Tensor::from_vector<int64_t>({0, 5, 17, 3, 3, 1}, {2, 3});
  Tensor oc = Tensor::empty({2, 3, 3, 8, 8});
  Tensor og = Tensor::empty({2, 3, 3, 8, 8}, DType::Float32, kGpu);
  backend_for(Device::cpu()).cut_patches(img, idx, oc, 8, 8, 6, 5);
  backend_for(kGpu).cut_patches(img.to(kGpu), idx.to(kGpu), og, 8, 8, 6, 5);
  EXPECT_TRUE(testing::all_close(og.to(Device::cpu()), oc, 0, 0));
}

TEST(CudaParity, ResNetTrainingStep) {
  IPSNET_REQUIRE_CUDA();
  Generator g1(7), g2(7);
  ResNet cpu_net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(2), g1);
  ResNet gpu_net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(2), g2);
  gpu_net.to(kGpu);
  cpu_net.train();
  gpu_net.train();
  Tensor x = randf({4, 1, 32, 32}, 60);
  Tensor yc = cpu_net.forward(x), yg = gpu_net.forward(x.to(kGpu));
  EXPECT_TRUE(testing::all_close(yg.to(Device::cpu()), yc, 1e-3, 1e-3));
  Tensor r = randf(yc.shape(), 61);
  ops::sum(ops::mul(yc, r)).backward();
  ops::sum(ops::mul(yg, r.to(kGpu))).backward();
  auto pc = cpu_net.named_parameters(), pg = gpu_net.named_parameters();
  ASSERT_EQ(pc.size(), pg.size());
  for (size_t i = 0; i < pc.items().size(); ++i) {
    SCOPED_TRACE(pc.items()[i].first);
    EXPECT_TRUE(testing::all_close(pg.items()[i].second.grad().to(Device::cpu()), pc.items()[i].second.grad(), 2e-3,
                                   2e-3));
  }
}

}  // namespace
}  // namespace ipsnet
