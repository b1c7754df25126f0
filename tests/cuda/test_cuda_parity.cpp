// CPU-versus-CUDA parity for every backend primitive, forward and backward,
// at test sizes and at the sizes where the kernels change strategy (split
// reductions, the top-k regimes, large transfers), plus an IPS selection and
// a ResNet training step. Every test skips, naming the reason, when no CUDA
// device is usable (the skip shows in the test summary). scripts/gpu_check.sh
// runs them on a lent GPU, some under compute-sanitizer.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>

#include "engine/autograd/grad_mode.h"
#include "engine/backend/device_select.h"
#include "engine/engine.h"
#include "models/ips_net.h"
#include "models/ips_selection.h"
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

/// Waits for the GPU (and reports an index error an earlier launch recorded).
void sync_gpu() { backend_for(kGpu).synchronize(); }

/// IPSNET_TEST_SMALL=1 (scripts/gpu_check.sh under compute-sanitizer, which
/// slows kernels 10-1000x): the size-regime tests keep every regime but run
/// fewer rows and variants.
bool small_run() {
  const char* e = std::getenv("IPSNET_TEST_SMALL");
  return e && *e && std::string(e) != "0";
}

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

TEST(CudaParity, ReductionsAtRealSizes) {
  IPSNET_REQUIRE_CUDA();
  // A full sum over one long row (split over many blocks), a bias gradient
  // (a column sum over many rows), sums over a leading axis, and the row
  // arg-reductions with a split row; int64 too.
  Tensor big = randf({3 << 20}, 90);
  check_parity("sum of 3M", [](auto& v) { return ops::sum(v[0]); }, {big}, {true}, 1e-3, 1e-6);
  check_parity("mean of 3M", [](auto& v) { return ops::mean(v[0]); }, {big}, {false}, 1e-7, 1e-6);
  check_parity("bias gradient (1600, 128)", [](auto& v) { return ops::sum(v[0], {0}); }, {randf({1600, 128}, 91)},
               {true}, 1e-4, 1e-5);
  check_parity("sum dim 0 (4000, 3)", [](auto& v) { return ops::sum(v[0], {0}); }, {randf({4000, 3}, 92)}, {true},
               1e-4, 1e-5);
  check_parity("mean dim 1 (2, 5000, 33)", [](auto& v) { return ops::mean(v[0], {1}); }, {randf({2, 5000, 33}, 93)},
               {true}, 1e-6, 1e-5);
  Tensor row = randf({2, 200000}, 94);
  {
    NoGradGuard ng;
    row.narrow(1, 150000, 1).fill_(5.0);  // the max, late in the row (another segment)
    row.narrow(1, 170000, 1).fill_(5.0);  // a tie: the lower index wins
    row.narrow(1, 3, 1).fill_(-5.0);
  }
  for (int64_t dim : {1}) {
    auto cm = ops::max(row, dim), gm = ops::max(row.to(kGpu), dim);
    EXPECT_TRUE(testing::all_close(gm.first.to(Device::cpu()), cm.first, 0, 0));
    EXPECT_EQ(gm.second.to(Device::cpu()).to_vector<int64_t>(), cm.second.to_vector<int64_t>());
    auto cn = ops::min(row, dim), gn = ops::min(row.to(kGpu), dim);
    EXPECT_EQ(gn.second.to(Device::cpu()).to_vector<int64_t>(), cn.second.to_vector<int64_t>());
  }
  {
    NoGradGuard ng;
    row.narrow(1, 123456, 1).fill_(std::numeric_limits<double>::quiet_NaN());  // NaN wins on rows
  }
  auto cm = ops::max(row, 1), gm = ops::max(row.to(kGpu), 1);
  EXPECT_EQ(gm.second.to(Device::cpu()).to_vector<int64_t>(), cm.second.to_vector<int64_t>());
  EXPECT_TRUE(testing::all_close(gm.first.to(Device::cpu()), cm.first, 0, 0));
  std::vector<int64_t> iv(300000);
  for (size_t i = 0; i < iv.size(); ++i) iv[i] = static_cast<int64_t>((i * 2654435761u) % 1000003) - 500000;
  Tensor ints = Tensor::from_vector<int64_t>(iv, {3, 100000});
  EXPECT_EQ(ops::sum(ints.to(kGpu)).to(Device::cpu()).to_vector<int64_t>(), ops::sum(ints).to_vector<int64_t>());
  EXPECT_EQ(ops::sum(ints.to(kGpu), {0}).to(Device::cpu()).to_vector<int64_t>(),
            ops::sum(ints, {0}).to_vector<int64_t>());
  EXPECT_EQ(ops::argmax(ints.to(kGpu), 1).to(Device::cpu()).to_vector<int64_t>(),
            ops::argmax(ints, 1).to_vector<int64_t>());
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
  // The aggregator's sizes: (B, M, D) rows, the parameter gradients split over blocks.
  check_parity("layer_norm (16, 100, 128)", [](auto& v) { return ops::layer_norm(v[0], v[1], v[2], 1e-5); },
               {randf({16, 100, 128}, 27), randf({128}, 28), randf({128}, 29)}, {true, true, true}, 2e-4, 2e-4);
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
  check_parity("index_add (via index_select backward)",
               [&](auto& v) { return ops::index_select(v[0], 0, v[1]); },
               {randf({50, 33}, 30), Tensor::from_vector<int64_t>({49, 0, 7, 7, 7, 12}, {6})}, {true, false});
}

TEST(CudaParity, IndexErrorsAreReportedAtTheNextSynchronisation) {
  IPSNET_REQUIRE_CUDA();
  // Out-of-range indices are errors on CUDA too. The kernels check them
  // without stalling the stream; the error surfaces when the host next
  // waits for the device (a copy to the host here), naming the op and sizes.
  Tensor x = randf({3, 10, 4}, 27).to(kGpu);
  Tensor bad = Tensor::from_vector<int64_t>({0, 10}, {2}).to(kGpu);
  try {
    Tensor y = ops::index_select(x, 1, bad);
    (void)y.to(Device::cpu());
    FAIL() << "expected an index error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("index_select"), std::string::npos) << m;
    EXPECT_NE(m.find("index 10"), std::string::npos) << m;
    EXPECT_NE(m.find("size 10"), std::string::npos) << m;
  }
  // Reported once: the device is usable afterwards.
  EXPECT_NO_THROW(sync_gpu());
  Tensor ok = ops::index_select(x, 1, Tensor::from_vector<int64_t>({9, 0}, {2}).to(kGpu));
  EXPECT_TRUE(testing::all_close(ok.to(Device::cpu()), ops::index_select(x.to(Device::cpu()), 1,
                                                                        Tensor::from_vector<int64_t>({9, 0}, {2})),
                                 0, 0));
  // gather with a negative index, reported by synchronize().
  Tensor gidx = Tensor::from_vector<int64_t>({0, -1, 2, 3}, {1, 4, 1}).to(kGpu);
  Tensor gy = ops::gather(x.narrow(0, 0, 1).narrow(2, 0, 1).contiguous(), 1, gidx);
  EXPECT_THROW(sync_gpu(), Error);
  EXPECT_NO_THROW(sync_gpu());
  // With the debug switch the error comes from the launch itself.
  BackendOptions saved = backend_options();
  backend_options().cuda_sync = true;
  EXPECT_THROW(ops::index_select(x, 1, bad), Error);
  backend_options() = saved;
}

TEST(CudaParity, TopkOverCandidates) {
  IPSNET_REQUIRE_CUDA();
  // M+I candidates per row, with ties (many equal scores).
  const std::vector<int64_t> sizes =
      small_run() ? std::vector<int64_t>{7, 5000} : std::vector<int64_t>{7, 200, 5000, 70000};
  for (int64_t n : sizes) {
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

TEST(CudaParity, TopkWithNansAndTiesInEachSizeRegime) {
  IPSNET_REQUIRE_CUDA();
  // The CUDA top-k sorts a row in shared memory under 48 KB, in opt-in shared
  // memory above that (up to the device's limit, 227 KB on Hopper), and in
  // global memory beyond. float rows take 8 bytes per (padded) element,
  // int64 rows 12: n = 3000 / 10000 / 40000 (float) and 3000 / 10000 / 20000
  // (int64) land in the three regimes. Each row holds NaNs (float), long
  // runs of ties and k values that cut through the ties.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  struct Case {
    DType dtype;
    int64_t n;
    const char* regime;
  };
  for (const Case& cs : {Case{DType::Float32, 3000, "shared"}, Case{DType::Float32, 10000, "opt-in shared"},
                         Case{DType::Float32, 40000, "global"}, Case{DType::Int64, 3000, "shared"},
                         Case{DType::Int64, 10000, "opt-in shared"}, Case{DType::Int64, 20000, "global"}}) {
    SCOPED_TRACE(std::string(dtype_name(cs.dtype)) + " n=" + std::to_string(cs.n) + " (" + cs.regime + ")");
    const int64_t rows = small_run() ? 4 : 5;
    Tensor x = testing::rand_double({rows, cs.n}, 100 + cs.n, -50, 50).to(DType::Float32);
    {
      NoGradGuard ng;
      x.narrow(1, cs.n / 3, cs.n / 3).fill_(7.0);         // a long run of ties in the middle
      x.narrow(1, 0, 17).fill_(49.0);                     // ties at the top
      if (cs.dtype == DType::Float32) {
        x.select(0, 1).narrow(0, cs.n - 5, 5).fill_(nan);  // NaNs count as largest, lower index first
        x.select(0, 2).narrow(0, 100, 1).fill_(nan);
        x.select(0, 3).fill_(nan);                         // a row of NaNs only
      }
    }
    if (cs.dtype == DType::Int64) x = x.to(DType::Int64);
    const std::vector<int64_t> ks =
        small_run() ? std::vector<int64_t>{cs.n / 3 + 20} : std::vector<int64_t>{1, 16, 200, cs.n / 3 + 20};
    for (bool largest : {true, false}) {
      if (small_run() && !largest) continue;
      for (int64_t k : ks) {
        SCOPED_TRACE(std::string(largest ? "largest" : "smallest") + " k=" + std::to_string(k));
        auto c = ops::topk(x, k, -1, largest);
        auto g = ops::topk(x.to(kGpu), k, -1, largest);
        EXPECT_EQ(g.second.to(Device::cpu()).to_vector<int64_t>(), c.second.to_vector<int64_t>());
        EXPECT_TRUE(testing::all_close(g.first.to(Device::cpu()), c.first, 0, 0));
      }
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

TEST(CudaParity, ConvAndPooling) {
  IPSNET_REQUIRE_CUDA();
  check_parity("conv2d", [](auto& v) { return ops::conv2d(v[0], v[1], v[2], {2, 1}, {1, 0}); },
               {randf({2, 3, 11, 9}, 50), randf({5, 3, 3, 3}, 51), randf({5}, 52)}, {true, true, true}, 2e-4, 2e-4);
  check_parity("conv2d dilated", [](auto& v) { return ops::conv2d(v[0], v[1], Tensor(), {1, 1}, {2, 2}, {2, 2}); },
               {randf({1, 4, 8, 8}, 53), randf({6, 4, 3, 3}, 54)}, {true, true}, 2e-4, 2e-4);
  check_parity("max_pool2d", [](auto& v) { return ops::max_pool2d(v[0], {3, 3}, {2, 2}, {1, 1}); },
               {randf({2, 3, 9, 10}, 58)}, {true});
  check_parity("adaptive_avg_pool2d_1x1", [](auto& v) { return ops::adaptive_avg_pool2d_1x1(v[0]); },
               {randf({2, 3, 9, 10}, 59)}, {true});
}

TEST(CudaParity, ConvWithoutInputChannelsOrOutputs) {
  IPSNET_REQUIRE_CUDA();
  // C == 0: y = bias, dbias = sum dy, dweight empty (the CPU's rule; cuDNN refuses C == 0).
  const Conv2dGeometry g = [] {
    Conv2dGeometry c;
    c.n = 2; c.c = 0; c.h = 5; c.w = 4; c.o = 3; c.kh = 3; c.kw = 3; c.ph = 1; c.pw = 1; c.ho = 5; c.wo = 4;
    return c;
  }();
  Tensor x = Tensor::empty({2, 0, 5, 4}), w = Tensor::empty({3, 0, 3, 3}), b = randf({3}, 80);
  Tensor dy = randf({2, 3, 5, 4}, 81);
  Backend& cpu = backend_for(Device::cpu());
  Backend& gpu = backend_for(kGpu);
  Tensor yc = Tensor::empty({2, 3, 5, 4}), yg = Tensor::full({2, 3, 5, 4}, 7.0, DType::Float32, kGpu);
  cpu.conv2d_forward(x, w, b, yc, g);
  gpu.conv2d_forward(x.to(kGpu), w.to(kGpu), b.to(kGpu), yg, g);
  EXPECT_TRUE(testing::all_close(yg.to(Device::cpu()), yc, 0, 0)) << "y = bias";
  Tensor dbc = Tensor::empty({3}), dbg = Tensor::full({3}, 7.0, DType::Float32, kGpu);
  cpu.conv2d_backward_weight(x, dy, w.clone(), dbc, g);
  gpu.conv2d_backward_weight(x.to(kGpu), dy.to(kGpu), w.to(kGpu), dbg, g);
  EXPECT_TRUE(testing::all_close(dbg.to(Device::cpu()), dbc, 1e-5, 1e-5)) << "dbias = sum dy";
  // O == 0: dx = 0.
  Conv2dGeometry go = g;
  go.c = 2;
  go.o = 0;
  Tensor dxg = Tensor::full({2, 2, 5, 4}, 7.0, DType::Float32, kGpu);
  gpu.conv2d_backward_data(Tensor::empty({2, 0, 5, 4}, DType::Float32, kGpu),
                           Tensor::empty({0, 2, 3, 3}, DType::Float32, kGpu), dxg, go);
  EXPECT_TRUE(testing::all_close(dxg.to(Device::cpu()), Tensor::zeros({2, 2, 5, 4}), 0, 0)) << "dx = 0";
}

TEST(CudaParity, ConvAlgorithmSearchStaysOutOfThePeak) {
  IPSNET_REQUIRE_CUDA();
  // The first call of a shape times the algorithms with a workspace of its
  // own (cudaMalloc, not the counted allocator); the second reuses the choice.
  // Both calls must raise the allocated peak by the same amount.
  Tensor x = randf({3, 7, 37, 29}, 82).to(kGpu), w = randf({11, 7, 5, 5}, 83).to(kGpu);
  int64_t rise[2];
  for (int i = 0; i < 2; ++i) {
    sync_gpu();
    const int64_t before = memory_stats(kGpu).allocated_bytes;
    reset_peak_memory(kGpu);
    Tensor y = ops::conv2d(x, w, Tensor(), {1, 1}, {2, 2});
    sync_gpu();
    rise[i] = memory_stats(kGpu).peak_allocated_bytes - before;
  }
  EXPECT_EQ(rise[0], rise[1]) << "the algorithm search added to the allocated peak";
  const MemoryStats s = memory_stats(kGpu);
  EXPECT_LE(s.num_frees, s.num_allocs);
}

TEST(CudaParity, BatchNorm) {
  IPSNET_REQUIRE_CUDA();
  // Small (one block per channel) and larger shapes (channels split over blocks).
  for (const Shape& shape : {Shape{3, 4, 5, 6}, Shape{64, 6, 25, 25}, Shape{257, 3, 1, 1}, Shape{40, 130, 2, 2}}) {
    SCOPED_TRACE(shape_str(shape));
    const int64_t c = shape[1];
    Tensor rm = Tensor::zeros({c}), rv = Tensor::ones({c});
    Tensor rmg = rm.to(kGpu), rvg = rv.to(kGpu);
    Tensor x = randf(shape, 55, -2, 3), gamma = randf({c}, 56), beta = randf({c}, 57);
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
  }
}

TEST(CudaParity, ChunkedStem) {
  IPSNET_REQUIRE_CUDA();
  // ops::conv_bn_relu_pool (the bf16 ResNet stem) in float32 on both sides,
  // 7 patches in chunks of 3 (a short last chunk), both BatchNorm modes.
  for (bool training : {true, false}) {
    Tensor rm = randf({8}, 64, -0.2, 0.2), rv = randf({8}, 65, 0.5, 1.5);
    Tensor rmg = rm.to(kGpu), rvg = rv.to(kGpu);
    check_parity(training ? "conv_bn_relu_pool train" : "conv_bn_relu_pool eval",
                 [&](auto& v) {
                   const bool gpu = v[0].device().is_cuda();
                   return ops::conv_bn_relu_pool(v[0], v[1], v[2], v[3], gpu ? rmg : rm, gpu ? rvg : rv, training,
                                                 0.1, 1e-5, {2, 2}, {3, 3}, {3, 3}, {2, 2}, {1, 1}, 3);
                 },
                 {randf({7, 1, 20, 20}, 60), randf({8, 1, 7, 7}, 61, -0.3, 0.3), randf({8}, 62, 0.5, 1.5),
                  randf({8}, 63, -0.3, 0.3)},
                 {true, true, true, true}, 2e-4, 2e-4);
    EXPECT_TRUE(testing::all_close(rmg.to(Device::cpu()), rm, 1e-6, 1e-5));
    EXPECT_TRUE(testing::all_close(rvg.to(Device::cpu()), rv, 1e-6, 1e-5));
  }
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

TEST(CudaParity, LargeTransfersPageableAndPinned) {
  IPSNET_REQUIRE_CUDA();
  // Pageable host memory goes through the two pinned staging buffers (8 MiB
  // each) in both directions; page-locked host memory is copied directly.
  // 300 MiB + 12 bytes: many chunks and a ragged last one.
  const int64_t n = (int64_t(300) << 18) + 3;
  Tensor host = Tensor::empty({n});
  {
    float* p = host.data<float>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>((i * 2654435761ll) % 1000003) * 0.001f;
  }
  Tensor dev = host.to(kGpu);
  Tensor back = dev.to(Device::cpu());
  EXPECT_EQ(std::memcmp(back.data<float>(), host.data<float>(), static_cast<size_t>(n) * sizeof(float)), 0)
      << "pageable round trip";
  // Pinned: register the host tensors' pages with the driver, copy both ways, unregister.
  Tensor pinned_src = host.clone(), pinned_dst = Tensor::zeros({n});
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  ASSERT_EQ(cudaHostRegister(pinned_src.data<float>(), bytes, cudaHostRegisterDefault), cudaSuccess);
  ASSERT_EQ(cudaHostRegister(pinned_dst.data<float>(), bytes, cudaHostRegisterDefault), cudaSuccess);
  Tensor dev2 = Tensor::empty({n}, DType::Float32, kGpu);
  backend_for(kGpu).copy_across(pinned_src, dev2);
  backend_for(kGpu).copy_across(dev2, pinned_dst);
  EXPECT_EQ(cudaHostUnregister(pinned_src.data<float>()), cudaSuccess);
  EXPECT_EQ(cudaHostUnregister(pinned_dst.data<float>()), cudaSuccess);
  EXPECT_EQ(std::memcmp(pinned_dst.data<float>(), host.data<float>(), bytes), 0) << "pinned round trip";
  // Device to device, and a strided (non-contiguous) view to the host.
  Tensor t = dev.narrow(0, 1, 1000).to(Device::cpu());
  EXPECT_EQ(std::memcmp(t.data<float>(), host.data<float>() + 1, 1000 * sizeof(float)), 0);
}

TEST(CudaParity, GemmWithOverlappingOutputsRunsBatchesInOrder) {
  IPSNET_REQUIRE_CUDA();
  // stride_c == 0 with 5 batches and beta = 1: the CPU adds the 5 products
  // into one C in order; CUDA must too (a batched call would race on C).
  Tensor a = randf({5, 7, 9}, 110), b = randf({5, 9, 6}, 111), c0 = randf({7, 6}, 112);
  for (double beta : {1.0, 0.0, 0.5}) {
    SCOPED_TRACE(beta);
    Tensor cc = c0.clone(), cg = c0.to(kGpu);
    backend_for(Device::cpu()).gemm(false, false, 7, 6, 9, 1.0, a, 9, 63, b, 6, 54, beta, cc, 6, 0, 5);
    backend_for(kGpu).gemm(false, false, 7, 6, 9, 1.0, a.to(kGpu), 9, 63, b.to(kGpu), 6, 54, beta, cg, 6, 0, 5);
    EXPECT_TRUE(testing::all_close(cg.to(Device::cpu()), cc, 1e-4, 1e-4));
    // k == 0: C = beta^5 C on the CPU's loop.
    Tensor kc = c0.clone(), kg = c0.to(kGpu);
    backend_for(Device::cpu()).gemm(false, false, 7, 6, 0, 1.0, a, 0, 0, b, 6, 0, beta, kc, 6, 0, 5);
    backend_for(kGpu).gemm(false, false, 7, 6, 0, 1.0, a.to(kGpu), 0, 0, b.to(kGpu), 6, 0, beta, kg, 6, 0, 5);
    EXPECT_TRUE(testing::all_close(kg.to(Device::cpu()), kc, 1e-6, 1e-6));
  }
}

TEST(CudaParity, FloatToInt64ConversionOfNanAndInfinity) {
  IPSNET_REQUIRE_CUDA();
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = Tensor::from_vector<float>({static_cast<float>(nan), static_cast<float>(inf), static_cast<float>(-inf),
                                         -3.5f, 2.9f, 1e20f, -1e20f, 0.0f},
                                        {8});
  EXPECT_EQ(x.to(kGpu).to(DType::Int64).to(Device::cpu()).to_vector<int64_t>(),
            x.to(DType::Int64).to_vector<int64_t>());
  // Strided source too, and fills.
  Tensor xs = Tensor::from_vector<float>({static_cast<float>(nan), 1, static_cast<float>(inf), 2}, {2, 2});
  EXPECT_EQ(xs.to(kGpu).transpose(0, 1).to(DType::Int64).to(Device::cpu()).to_vector<int64_t>(),
            xs.transpose(0, 1).to(DType::Int64).to_vector<int64_t>());
  EXPECT_EQ(Tensor::full({3}, nan, DType::Int64, kGpu).to(Device::cpu()).to_vector<int64_t>(),
            Tensor::full({3}, nan, DType::Int64).to_vector<int64_t>());
  EXPECT_EQ(Tensor::full({3}, -inf, DType::Int64, kGpu).to(Device::cpu()).to_vector<int64_t>(),
            Tensor::full({3}, -inf, DType::Int64).to_vector<int64_t>());
}

TEST(CudaParity, EmptyCacheKeepsTheCounts) {
  IPSNET_REQUIRE_CUDA();
  {
    Tensor t = randf({1000, 1000}, 120).to(kGpu);
    Tensor u = ops::mul(t, 2.0);
    (void)u.to(Device::cpu());
  }
  const MemoryStats before = memory_stats(kGpu);
  get_allocator(kGpu).empty_cache();  // synchronises the device before freeing
  const MemoryStats after = memory_stats(kGpu);
  EXPECT_EQ(after.num_frees, before.num_frees);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_LE(after.reserved_bytes, before.reserved_bytes);
  EXPECT_LE(after.num_frees, after.num_allocs);
  // The device still works after its cache went back.
  Tensor v = randf({300, 300}, 121);
  EXPECT_TRUE(testing::all_close(ops::mul(v.to(kGpu), 3.0).to(Device::cpu()), ops::mul(v, 3.0), 0, 0));
}

// ---- IPS selection ------------------------------------------------------------------

// B images of N 1x16x16 patches drawn once from a seed; patch p % 9 == 4 is
// empty (known zero). get() hands them out on the device it was built for.
class FixedPatches : public PatchSource {
 public:
  FixedPatches(int64_t B, int64_t N, uint64_t seed, Device device) : B_(B), N_(N), device_(device) {
    Generator g(seed);
    all_ = Tensor::rand({B, N, 1, 16, 16}, g);
    NoGradGuard ng;
    for (int64_t p = 4; p < N; p += 9) all_.select(1, p).fill_(0.0);
  }
  int64_t batch() const override { return B_; }
  int64_t num_patches() const override { return N_; }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override {
    const int64_t n = static_cast<int64_t>(patch.size());
    Tensor out = Tensor::empty({n, 1, 16, 16});
    for (int64_t i = 0; i < n; ++i)
      out.select(0, i).copy_(all_.select(0, image[static_cast<size_t>(i)]).select(0, patch[static_cast<size_t>(i)]));
    return device_.is_cpu() ? out : out.to(device_);
  }
  bool is_zero(int64_t, int64_t p) const override { return p % 9 == 4; }

 private:
  int64_t B_, N_;
  Device device_;
  Tensor all_;
};

IPSNet selection_net(uint64_t seed) {
  Generator gen(seed);
  return IPSNet(IPSNetOptions()
                    .encoder("resnet18")
                    .in_channels(1)
                    .n_res_blocks(2)
                    .transformer(AggregatorOptions().n_token(2).H(2).D(16).D_k(8).D_v(8).D_inner(16))
                    .tasks({{"a", 3, TaskActivation::Softmax}, {"b", 4, TaskActivation::Sigmoid}}),
                gen);
}

// ips_select is being reshaped (positional encodings move into the network):
// call whichever form this tree has; without positional encodings both mean
// the same selection.
template <typename Net, typename Src>
auto select_patches(Net& net, Src& src, const IPSOptions& o, Generator& g, int) -> decltype(ips_select(net, src, o, g)) {
  return ips_select(net, src, o, g);
}
template <typename Net, typename Src>
auto select_patches(Net& net, Src& src, const IPSOptions& o, Generator& g, long)
    -> decltype(ips_select(net, src, Tensor(), o, g)) {
  return ips_select(net, src, Tensor(), o, g);
}

TEST(CudaParity, IpsSelectionSelectsTheSamePatches) {
  IPSNET_REQUIRE_CUDA();
  // The same network (same seed) on each device, the same patches and the
  // same generator seeds: the selection must keep the same patches in the
  // same order, with scores equal up to float rounding. Variants: the plain
  // loop, batch and instance shuffles, STKIM masking, and the zero-patch
  // shortcut off (identical-patch dedup applies to CPU patches only).
  IPSNet cpu_net = selection_net(31), gpu_net = selection_net(31);
  gpu_net.to(kGpu);
  FixedPatches cpu_src(3, 50, 7, Device::cpu()), gpu_src(3, 50, 7, kGpu);
  struct Variant {
    const char* name;
    IPSOptions opt;
  };
  std::vector<Variant> variants;
  IPSOptions base;
  base.M = 5;
  base.I = 7;
  base.dedup_identical = false;
  base.shuffle = false;
  variants.push_back({"plain", base});
  IPSOptions o = base;
  o.shuffle = true;
  variants.push_back({"batch shuffle", o});
  o.instance_shuffle = true;
  variants.push_back({"instance shuffle", o});
  o = base;
  o.shuffle = true;
  o.mask_K = 3;
  o.mask_p = 0.5;
  variants.push_back({"stkim", o});
  o = base;
  o.dedup_zero = false;
  o.score_all = true;
  variants.push_back({"no zero shortcut, all scores", o});
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    Generator gc(11), gg(11);
    SelectionResult rc = select_patches(cpu_net, cpu_src, v.opt, gc, 0);
    SelectionResult rg = select_patches(gpu_net, gpu_src, v.opt, gg, 0);
    ASSERT_TRUE(rg.idx.defined());
    EXPECT_EQ(rg.idx.to(Device::cpu()).to_vector<int64_t>(), rc.idx.to_vector<int64_t>());
    EXPECT_TRUE(testing::all_close(rg.scores.to(Device::cpu()), rc.scores, 1e-5, 1e-4));
    if (v.opt.score_all) {
      EXPECT_TRUE(testing::all_close(rg.all_scores.to(Device::cpu()), rc.all_scores, 1e-5, 1e-4));
    }
    EXPECT_EQ(rg.n_encoded, rc.n_encoded);
  }
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


// ---- bfloat16 (precision: bf16) on cuBLAS and cuDNN --------------------------
// The GPU's bfloat16 results against the CPU's float32 ones, element by
// element, within the bound tests/engine/test_bf16.cpp justifies: with
// u = 2^-8 (bfloat16's rounding), products of two rounded operands are exact
// in float32 and off by at most (2u + u^2) |a b| each, so an output is off by
// at most t S with t = 2u + u^2 + 2 K 2^-24 (the float32 accumulation of both
// sides), S the same op on |operands| and K its longest reduction. cuDNN's
// legacy API writes its bfloat16 outputs in bfloat16 (widened afterwards),
// one more rounding: t + u (1 + t) for convolutions. The results must also
// differ from float32 somewhere, else the bfloat16 path did not run.

#define IPSNET_REQUIRE_CUDA_BF16()                                                                          \
  do {                                                                                                      \
    IPSNET_REQUIRE_CUDA();                                                                                  \
    if (!backend_for(kGpu).supports_bf16_gemm() || !backend_for(kGpu).supports_bf16_conv())                 \
      GTEST_SKIP() << "no CUDA device of compute capability >= 8.0 (bfloat16 tensor cores) for the bf16 " \
                      "tests";                                                                              \
  } while (0)

::testing::AssertionResult bf16_within(const Tensor& got, const Tensor& fp32, const Tensor& bound, int64_t K,
                                       bool rounded_output, const std::string& what) {
  const double u = std::ldexp(1.0, -8);
  double tol = 2 * u + u * u + 2.0 * double(K) * std::ldexp(1.0, -24);
  if (rounded_output) tol += u * (1 + tol);
  std::vector<float> a = got.to(Device::cpu()).contiguous().to_vector<float>(),
                     b = fp32.contiguous().to_vector<float>(), s = bound.contiguous().to_vector<float>();
  if (a.size() != b.size() || a.size() != s.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  double max_diff = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    const double lim = tol * double(s[i]) * 1.0001 + 1e-30;
    max_diff = std::max(max_diff, d);
    worst = std::max(worst, d / lim);
    if (!(d <= lim))
      return ::testing::AssertionFailure() << what << "[" << i << "]: cuda bf16 " << a[i] << " vs cpu fp32 " << b[i]
                                           << ", |diff| " << d << " > bound " << lim;
  }
  if (max_diff == 0)
    return ::testing::AssertionFailure() << what << ": bf16 equals fp32 exactly (the bfloat16 path did not run)";
  std::printf("[ bf16 bound ] %s: max |diff| %.3g, worst diff/bound %.3f\n", what.c_str(), max_diff, worst);
  return ::testing::AssertionSuccess();
}

struct Bf16Run {
  Tensor y;                   // on the CPU
  std::vector<Tensor> grads;  // on the CPU
};

/// y = f(inputs) on `dev` and the gradients of sum(y * r), under
/// PrecisionGuard(bf16); abs: |inputs| and |r| (the bound's problem).
Bf16Run run_bf16(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                 const Tensor& r, Device dev, bool bf16, bool abs) {
  std::vector<Tensor> in;
  for (const Tensor& t : inputs) {
    Tensor c = (abs ? ops::abs(t) : t.clone()).to(dev).detach();
    c.set_requires_grad(true);
    in.push_back(c);
  }
  Bf16Run out;
  PrecisionGuard precision(bf16);
  Tensor y = f(in);
  ops::sum(ops::mul(y, (abs ? ops::abs(r) : r).to(dev))).backward();
  out.y = y.detach().to(Device::cpu());
  for (const Tensor& t : in) out.grads.push_back(t.grad().to(Device::cpu()));
  return out;
}

TEST(CudaParity, Bf16GemmThroughCublas) {
  IPSNET_REQUIRE_CUDA_BF16();
  Backend& cpu = backend_for(Device::cpu());
  Backend& gpu = backend_for(kGpu);
  const int64_t m = 37, n = 29, k = 300, batch = 3, pad = 5;
  uint64_t seed = 120;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      for (int layout = 0; layout < 3; ++layout) {  // 0 batched dense, 1 padded rows, 2 A shared (stride 0)
        SCOPED_TRACE(str_cat("ta ", ta, " tb ", tb, " layout ", layout));
        const int64_t lda = (ta ? m : k) + (layout == 1 ? pad : 0), ldb = (tb ? k : n) + (layout == 1 ? pad : 0);
        const int64_t span_a = (ta ? k : m) * lda, span_b = (tb ? n : k) * ldb;
        const int64_t stride_a = layout == 2 ? 0 : span_a, stride_b = span_b, stride_c = m * n;
        Tensor a = randf({layout == 2 ? span_a : batch * span_a}, seed++);
        Tensor b = randf({batch * span_b}, seed++);
        Tensor c_fp = Tensor::empty({batch * m * n}), c_abs = Tensor::empty({batch * m * n});
        cpu.gemm(ta, tb, m, n, k, 1.0, a, lda, stride_a, b, ldb, stride_b, 0.0, c_fp, n, stride_c, batch);
        cpu.gemm(ta, tb, m, n, k, 1.0, ops::abs(a), lda, stride_a, ops::abs(b), ldb, stride_b, 0.0, c_abs, n,
                 stride_c, batch);
        Tensor c_gpu = Tensor::full({batch * m * n}, 7.0, DType::Float32, kGpu);
        gpu.gemm_bf16(ta, tb, m, n, k, a.to(kGpu), lda, stride_a, b.to(kGpu), ldb, stride_b, c_gpu, n, stride_c,
                      batch);
        EXPECT_TRUE(bf16_within(c_gpu, c_fp, c_abs, k, false, str_cat("gemm_bf16 ta ", ta, " tb ", tb, " layout ",
                                                                      layout)));
      }
    }
  }
  // k == 0 writes zeros, as the float32 gemm.
  Tensor c0 = Tensor::full({4, 5}, 7.0, DType::Float32, kGpu);
  gpu.gemm_bf16(false, false, 4, 5, 0, Tensor::empty({1}, DType::Float32, kGpu), 1, 0,
                Tensor::empty({5}, DType::Float32, kGpu), 5, 0, c0, 5, 0, 1);
  EXPECT_TRUE(testing::all_close(c0.to(Device::cpu()), Tensor::zeros({4, 5}), 0, 0));
}

TEST(CudaParity, Bf16MatmulAndLinearGradients) {
  IPSNET_REQUIRE_CUDA_BF16();
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  struct Case {
    std::string name;
    F f;
    std::vector<Tensor> inputs;
    int64_t K;
    std::vector<size_t> float32_grads;  // gradients that are float32 sums, not products
  };
  std::vector<Case> cases = {
      {"linear", [](auto& v) { return ops::linear(v[0], v[1], v[2]); },
       {randf({6, 10, 96}, 130), randf({40, 96}, 131), randf({40}, 132)}, 96, {2}},  // K: 96, 40, 60
      {"batched matmul", [](auto& v) { return ops::matmul(v[0], v[1]); },
       {randf({3, 17, 64}, 133), randf({3, 64, 23}, 134)}, 64, {}},  // K: 64, 23, 17
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Generator gen(17, 0);
    const Tensor y_shape = c.f(c.inputs);
    Tensor r = Tensor::randn(y_shape.shape(), gen);
    Bf16Run fp = run_bf16(c.f, c.inputs, r, Device::cpu(), false, false);
    Bf16Run bound = run_bf16(c.f, c.inputs, r, Device::cpu(), false, true);
    Bf16Run bf = run_bf16(c.f, c.inputs, r, kGpu, true, false);
    EXPECT_TRUE(bf16_within(bf.y, fp.y, bound.y, c.K, false, c.name + " forward"));
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      if (std::find(c.float32_grads.begin(), c.float32_grads.end(), i) != c.float32_grads.end()) {
        EXPECT_TRUE(testing::all_close(bf.grads[i], fp.grads[i], 1e-4, 1e-5)) << c.name << " input " << i;
      } else {
        EXPECT_TRUE(bf16_within(bf.grads[i], fp.grads[i], bound.grads[i], c.K, false,
                                c.name + " gradient of input " + std::to_string(i)));
      }
    }
  }
}

TEST(CudaParity, Bf16ConvForwardBackwardDataAndFilter) {
  IPSNET_REQUIRE_CUDA_BF16();
  using F = std::function<Tensor(const std::vector<Tensor>&)>;
  struct Case {
    std::string name;
    F f;
    std::vector<Tensor> inputs;
    int64_t K;  // the longest reduction of y, dx, dweight
  };
  std::vector<Case> cases = {
      // K: forward C kh kw = 216, dx O kh kw <= 144, dweight N ho wo = 2 * 10 * 9.
      {"conv2d bias stride", [](auto& v) { return ops::conv2d(v[0], v[1], v[2], {2, 1}, {1, 1}); },
       {randf({2, 24, 19, 9}, 140), randf({16, 24, 3, 3}, 141), randf({16}, 142)}, 216},
      // forward 16 * 9 = 144, dx 24 * 9, dweight 1 * 12 * 12
      {"conv2d dilated", [](auto& v) { return ops::conv2d(v[0], v[1], Tensor(), {1, 1}, {2, 2}, {2, 2}); },
       {randf({1, 16, 12, 12}, 143), randf({24, 16, 3, 3}, 144)}, 216},
      // 1x1: forward 64, dx 32, dweight 3 * 8 * 8 = 192
      {"conv2d 1x1", [](auto& v) { return ops::conv2d(v[0], v[1], Tensor(), {1, 1}, {0, 0}); },
       {randf({3, 64, 8, 8}, 145), randf({32, 64, 1, 1}, 146)}, 192},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Generator gen(17, 0);
    const Tensor y_shape = c.f(c.inputs);
    Tensor r = Tensor::randn(y_shape.shape(), gen);
    Bf16Run fp = run_bf16(c.f, c.inputs, r, Device::cpu(), false, false);
    Bf16Run bound = run_bf16(c.f, c.inputs, r, Device::cpu(), false, true);
    Bf16Run bf = run_bf16(c.f, c.inputs, r, kGpu, true, false);
    EXPECT_TRUE(bf16_within(bf.y, fp.y, bound.y, c.K, true, c.name + " forward"));
    EXPECT_TRUE(bf16_within(bf.grads[0], fp.grads[0], bound.grads[0], c.K, true, c.name + " backward data"));
    EXPECT_TRUE(bf16_within(bf.grads[1], fp.grads[1], bound.grads[1], c.K, true, c.name + " backward filter"));
    if (c.inputs.size() > 2) {  // dbias: a float32 sum of dy in either precision
      EXPECT_TRUE(testing::all_close(bf.grads[2], fp.grads[2], 1e-4, 1e-5)) << c.name << " bias gradient";
    }
  }
  // Inference under ConvBf16Guard (selection_bf16) takes the same path.
  Tensor x = randf({2, 24, 19, 9}, 140), w = randf({16, 24, 3, 3}, 141);
  Tensor y_fp = ops::conv2d(x, w, Tensor(), {1, 1}, {1, 1});
  Tensor y_abs = ops::conv2d(ops::abs(x), ops::abs(w), Tensor(), {1, 1}, {1, 1});
  Tensor y_gpu;
  {
    NoGradGuard ng;
    ConvBf16Guard bf16(true);
    y_gpu = ops::conv2d(x.to(kGpu), w.to(kGpu), Tensor(), {1, 1}, {1, 1});
  }
  EXPECT_TRUE(bf16_within(y_gpu, y_fp, y_abs, 216, true, "conv2d inference under ConvBf16Guard"));
}

}  // namespace
}  // namespace ipsnet
