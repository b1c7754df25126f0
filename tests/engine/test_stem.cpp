// conv_bn_relu_pool (engine/ops/stem.cpp): the chunked ResNet stem against the
// composed ops in double (values, every gradient, running statistics) for
// chunks of 1, 2, 3 and the whole batch, numeric gradient checks in both
// BatchNorm modes, bfloat16 against the composed ops, and the memory claim:
// no conv-sized map for the whole batch.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "tests/testing/gradcheck.h"

namespace ipsnet {
namespace {

using testing::gradcheck;
using testing::rand_double;

struct StemOut {
  Tensor y, dx, dw, dgamma, dbeta, rm, rv;
};

// The stem of a ResNet (7x7/2 conv, BatchNorm, ReLU, 3x3/2 max pool) on x,
// fused (chunk > 0) or composed of single ops (chunk 0) as ResNet composes
// them with activation recomputation (the BatchNorm reads the unrounded conv
// output, as the fused op does); loss sum(y * r).
StemOut run_stem(const Tensor& x0, const Tensor& w0, const Tensor& g0, const Tensor& b0, bool training,
                 int64_t chunk) {
  const DType dt = x0.dtype();
  Tensor x = x0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
  Tensor g = g0.clone().set_requires_grad(true), b = b0.clone().set_requires_grad(true);
  const int64_t C = w0.size(0);
  Tensor rm = rand_double({C}, 41, -0.2, 0.2).to(dt), rv = rand_double({C}, 42, 0.5, 1.5).to(dt);
  Tensor y = chunk > 0 ? ops::conv_bn_relu_pool(x, w, g, b, rm, rv, training, 0.1, 1e-5, {2, 2}, {3, 3}, {3, 3},
                                                {2, 2}, {1, 1}, chunk)
                       : ops::max_pool2d(ops::batch_norm_relu(ops::conv2d_recomputed(x, w, Tensor(), {2, 2}, {3, 3}),
                                                              g, b, rm, rv, training, 0.1, 1e-5, true),
                                         {3, 3}, {2, 2}, {1, 1});
  Tensor r = rand_double(y.shape(), 43).to(dt);
  ops::sum(ops::mul(y, r)).backward();
  return {y.detach(), x.grad(), w.grad(), g.grad(), b.grad(), rm, rv};
}

void expect_close(const StemOut& a, const StemOut& b, double tol, const std::string& what) {
  SCOPED_TRACE(what);
  const std::vector<std::pair<const char*, std::pair<Tensor, Tensor>>> pairs = {
      {"y", {a.y, b.y}},           {"dx", {a.dx, b.dx}},   {"dw", {a.dw, b.dw}}, {"dgamma", {a.dgamma, b.dgamma}},
      {"dbeta", {a.dbeta, b.dbeta}}, {"running_mean", {a.rm, b.rm}}, {"running_var", {a.rv, b.rv}}};
  for (const auto& p : pairs) {
    SCOPED_TRACE(p.first);
    ASSERT_TRUE(p.second.first.defined() && p.second.second.defined());
    EXPECT_TRUE(testing::all_close(p.second.first, p.second.second, tol, tol));
  }
}

TEST(ConvBnReluPool, MatchesTheComposedOpsForEveryChunking) {
  // 5 images: chunks of 1, 2 (a short last chunk), 3 and 8 (one chunk).
  const Tensor x = rand_double({5, 2, 13, 11}, 1), w = rand_double({4, 2, 7, 7}, 2, -0.3, 0.3);
  const Tensor g = rand_double({4}, 3, 0.5, 1.5), b = rand_double({4}, 4, -0.3, 0.3);
  for (bool training : {true, false}) {
    const StemOut ref = run_stem(x, w, g, b, training, 0);
    for (int64_t chunk : {1, 2, 3, 8})
      expect_close(run_stem(x, w, g, b, training, chunk), ref, 1e-10,
                   str_cat(training ? "training" : "eval", ", chunk ", chunk));
  }
}

TEST(ConvBnReluPool, GradcheckDoubleInBothModes) {
  for (bool training : {true, false})
    for (int64_t chunk : {1, 2, 3}) {
      SCOPED_TRACE(str_cat(training ? "training" : "eval", ", chunk ", chunk));
      Tensor rm = rand_double({3}, 5, -0.2, 0.2), rv = rand_double({3}, 6, 0.5, 1.5);
      auto f = [&](const std::vector<Tensor>& t) {
        return ops::conv_bn_relu_pool(t[0], t[1], t[2], t[3], rm.clone(), rv.clone(), training, 0.1, 1e-5, {2, 2},
                                      {3, 3}, {3, 3}, {2, 2}, {1, 1}, chunk);
      };
      EXPECT_TRUE(gradcheck(f, {rand_double({3, 1, 9, 9}, 7), rand_double({3, 1, 7, 7}, 8),
                                rand_double({3}, 9, 0.5, 1.5), rand_double({3}, 10, -0.3, 0.3)}));
    }
}

TEST(ConvBnReluPool, Float32AndBf16FollowTheComposedOps) {
  const Tensor x = rand_double({6, 1, 20, 20}, 11).to(DType::Float32);
  const Tensor w = rand_double({8, 1, 7, 7}, 12, -0.3, 0.3).to(DType::Float32);
  const Tensor g = rand_double({8}, 13, 0.5, 1.5).to(DType::Float32), b = rand_double({8}, 14, -0.3, 0.3).to(DType::Float32);
  // float32: only the statistics' summation order differs.
  expect_close(run_stem(x, w, g, b, true, 4), run_stem(x, w, g, b, true, 0), 1e-4, "float32");
  if (!backend_for(Device::cpu()).supports_bf16_conv()) {
    GTEST_SKIP() << "SKIPPED (bf16 part): this CPU has no AVX512-BF16, no bfloat16 convolution to test";
  }
  // bfloat16 convolutions (8 bits of mantissa) in both: the fused op runs the
  // same primitives on chunks, so values agree far inside bf16's rounding.
  PrecisionGuard p(true);
  expect_close(run_stem(x, w, g, b, true, 4), run_stem(x, w, g, b, true, 0), 1e-3, "bf16");
}

TEST(ConvBnReluPool, HoldsNoConvSizedMapForTheWholeBatch) {
  // 64 patches of 50 x 50, chunks of 4: the composed stem holds three
  // conv-sized maps (64 x 25 x 25 floats) per patch at its peak; the fused one
  // the patch, its output (16 x 13 x 13 floats) and the loss's maps of that
  // size, plus one chunk's few conv-sized maps (1/16 of the batch).
  const int64_t n = 64, chunk = 4;
  const Tensor x = rand_double({n, 1, 50, 50}, 15).to(DType::Float32);
  const Tensor w = rand_double({64, 1, 7, 7}, 16, -0.2, 0.2).to(DType::Float32);
  const Tensor g = Tensor::ones({64}), b = Tensor::zeros({64});
  auto peak = [&](int64_t c) {
    reset_peak_memory();
    const double base = static_cast<double>(memory_stats().allocated_bytes);
    run_stem(x, w, g, b, true, c);
    return (static_cast<double>(memory_stats().peak_allocated_bytes) - base) / static_cast<double>(n);
  };
  const double conv_map = 4.0 * 64 * 25 * 25;  // bytes per patch
  const double composed = peak(0), fused = peak(chunk);
  std::printf("[ stem ] peak per patch: composed %.1f KiB, fused (chunks of %lld) %.1f KiB; conv map %.1f KiB\n",
              composed / 1024, static_cast<long long>(chunk), fused / 1024, conv_map / 1024);
  // (Both include the loss's pooled-size maps and the patch.)
  EXPECT_GT(composed, 3.0 * conv_map);
  EXPECT_GT(composed - fused, 2.0 * conv_map);
}

TEST(ConvBnReluPool, ErrorMessages) {
  const Tensor x = Tensor::zeros({2, 1, 9, 9}), w = Tensor::zeros({3, 1, 7, 7});
  auto msg = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no exception)";
  };
  EXPECT_NE(msg([&] {
              ops::conv_bn_relu_pool(x, w, Tensor::ones({4}), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5, {2, 2},
                                     {3, 3}, {3, 3}, {2, 2}, {1, 1}, 4);
            }).find("expected (3,)"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              ops::conv_bn_relu_pool(x, w, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5, {2, 2}, {3, 3},
                                     {3, 3}, {2, 2}, {1, 1}, 0);
            }).find("chunk must be >= 1, got 0"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              ops::conv_bn_relu_pool(x, w, Tensor(), Tensor(), Tensor(), Tensor(), false, 0.1, 1e-5, {2, 2}, {3, 3},
                                     {3, 3}, {2, 2}, {1, 1}, 4);
            }).find("eval mode needs running_mean"),
            std::string::npos);
}

}  // namespace
}  // namespace ipsnet
