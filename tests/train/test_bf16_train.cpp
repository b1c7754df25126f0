// precision: bf16 (issue 17) end to end: one training step of the tiny IPS
// model (ResNet encoder, transformer aggregator, head) in bfloat16 against the
// same step in float32 from the same initialisation; the config key's checks.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/autograd/grad_mode.h"
#include "tests/train/tiny_data.h"
#include "train/batch.h"
#include "train/methods/ips.h"
#include "train/config.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

using testing_data::TempDir;
using testing_train::tiny_config;

struct Step {
  double loss = 0;
  double grad_norm = 0;
  std::vector<std::pair<std::string, std::vector<float>>> grads;  // per parameter
};

Step one_step(const std::string& precision) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  c.precision = precision;
  train::Trainer t(c, true);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < c.B; ++i) ids.push_back(i);
  Step s;
  s.loss = t.train_step(ids);
  double sq = 0;
  for (const auto& np : t.model().named_parameters()) {
    const Tensor g = np.second.grad();
    double q = 0;
    if (g.defined()) {
      s.grads.emplace_back(np.first, g.contiguous().to_vector<float>());
      for (float v : s.grads.back().second) q += double(v) * double(v);
    }
    sq += q;
  }
  s.grad_norm = std::sqrt(sq);
  return s;
}

TEST(PrecisionBf16Train, OneStepCloseToFloat32) {
  const Backend& be = backend_for(Device::cpu());
  if (!be.supports_bf16_conv() || !be.supports_bf16_gemm())
    GTEST_SKIP() << "SKIPPED: this CPU has no AVX512-BF16 (oneDNN's bfloat16 conv/matmul)";
  const Step fp = one_step("fp32"), fp2 = one_step("fp32"), bf = one_step("bf16");
  // The float32 path is unchanged by the new key: deterministic, bit for bit.
  EXPECT_EQ(fp.loss, fp2.loss);
  EXPECT_EQ(fp.grad_norm, fp2.grad_norm);
  // bfloat16: each conv/matmul is within 2^-7 (worst case, relative to the sum
  // of |terms|) of float32 (tests/engine/test_bf16.cpp); over the ~20 such
  // layers of the step, errors of independent sign add up to about
  // sqrt(20) 2^-8 ~ 1.7 % at most in practice, hence 1 % on the loss (a
  // smooth average over the batch) and 2 % on the global gradient norm.
  // Measured on AVX512-BF16: 3e-5 and 1.3e-3 (the log line) with float32
  // saved activations; 8.3e-5 and 4.1e-4 since BatchNorm reads its input
  // rounded to bfloat16 and the saved activations are bfloat16.
  const double dl = std::fabs(bf.loss - fp.loss) / std::fabs(fp.loss);
  const double dg = std::fabs(bf.grad_norm - fp.grad_norm) / fp.grad_norm;
  std::printf("[ bf16 step ] loss fp32 %.6f bf16 %.6f (rel %.2e); grad norm fp32 %.6f bf16 %.6f (rel %.2e)\n",
              fp.loss, bf.loss, dl, fp.grad_norm, bf.grad_norm, dg);
  EXPECT_LT(dl, 0.01);
  EXPECT_LT(dg, 0.02);
  EXPECT_NE(bf.loss, fp.loss) << "bf16 gave float32's loss bit for bit: the bfloat16 path did not run";
  // Each parameter's gradient, not only the global norm (which the encoder
  // dominates): the same direction (cosine) and size (norm) as in float32,
  // so no parameter group is trained differently in bf16. The early
  // BatchNorms' and convolutions' gradients are sums with cancellation, so
  // rounding moves them most: measured here, lowest cosine 0.986
  // (encoder.bn1.weight), largest norm difference 3.2 %; PyTorch 1.13's CPU
  // autocast on a ResNet-18 (2 stages) over sparse 50x50 patches, fp32
  // against bf16 the same way (scripts/bf16_grad_cosines.py): 0.9875
  // (layer1.0.conv1) and 2.7 % (bn1).
  // Bounds: cosine > 0.97, norm within 6 %.
  ASSERT_EQ(bf.grads.size(), fp.grads.size());
  double worst_cos = 1, worst_norm = 0;
  std::string worst_cos_name, worst_norm_name;
  for (size_t i = 0; i < fp.grads.size(); ++i) {
    const auto& a = fp.grads[i].second;
    const auto& b = bf.grads[i].second;
    ASSERT_EQ(bf.grads[i].first, fp.grads[i].first);
    ASSERT_EQ(a.size(), b.size());
    double ab = 0, aa = 0, bb = 0;
    for (size_t k = 0; k < a.size(); ++k) {
      ab += double(a[k]) * b[k];
      aa += double(a[k]) * a[k];
      bb += double(b[k]) * b[k];
    }
    if (aa < 1e-24 && bb < 1e-24) continue;  // no gradient in either (an unused head, say)
    const double cos = ab / std::sqrt(aa * bb), dn = std::fabs(std::sqrt(bb / aa) - 1);
    if (cos < worst_cos) worst_cos = cos, worst_cos_name = fp.grads[i].first;
    if (dn > worst_norm) worst_norm = dn, worst_norm_name = fp.grads[i].first;
    EXPECT_GT(cos, 0.97) << fp.grads[i].first;
    EXPECT_LT(dn, 0.06) << fp.grads[i].first;
  }
  std::printf("[ bf16 step ] per parameter: lowest cosine %.6f (%s), largest norm difference %.2e (%s)\n", worst_cos,
              worst_cos_name.c_str(), worst_norm, worst_norm_name.c_str());
  EXPECT_FALSE(precision_bf16_enabled()) << "the trainer's guard is released after the step";
}

// The selection under precision: bf16 is selection_bf16's: convolutions in
// bfloat16, the projection and the scores that rank the candidates in
// float32 (models/ips_selection.cpp): the same patches, the same scores.
TEST(PrecisionBf16Train, SelectionIsSelectionBf16s) {
  const Backend& be = backend_for(Device::cpu());
  if (!be.supports_bf16_conv() || !be.supports_bf16_gemm())
    GTEST_SKIP() << "SKIPPED: this CPU has no AVX512-BF16 (oneDNN's bfloat16 conv/matmul)";
  TempDir out;
  train::Config c = tiny_config(out.path);
  train::Trainer t(c, true);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < 16; ++i) ids.push_back(i);
  train::IPSMethod& ips = dynamic_cast<train::IPSMethod&>(t.method());
  auto select = [&](bool precision_bf16, bool selection_bf16) {
    IPSOptions opt = ips.options(false);
    opt.bf16 = selection_bf16;
    NoGradGuard ng;
    PrecisionGuard precision(precision_bf16);
    train::Batch b(t.source("train"), ids, Device::cpu(), false, c.B_seq);
    Generator g(3);
    return ips_select(ips.net(), b.part(0), opt, g);
  };
  const SelectionResult prec = select(true, false), sel = select(false, true), fp = select(false, false);
  EXPECT_EQ(prec.idx.to_vector<int64_t>(), sel.idx.to_vector<int64_t>());
  EXPECT_EQ(prec.scores.to_vector<float>(), sel.scores.to_vector<float>());
  EXPECT_NE(prec.scores.to_vector<float>(), fp.scores.to_vector<float>()) << "the convolutions ran in float32";
}

TEST(PrecisionBf16Train, ConfigKey) {
  train::Config c = train::parse_config("precision: bf16\n", "test");
  EXPECT_EQ(c.precision, "bf16");
  EXPECT_EQ(train::parse_config("B: 2\n", "test").precision, "fp32");
  try {
    train::validate(train::parse_config("precision: fp16\n", "test"));
    FAIL() << "precision: fp16 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config key 'precision': expected fp32 or bf16, got 'fp16'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace ipsnet
