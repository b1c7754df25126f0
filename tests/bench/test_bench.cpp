// Issue 7: the exact shortcuts of the selection pass (zero-patch dedup,
// BatchNorm folding) select the same patches as the plain algorithm.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/megapixel_mnist.h"
#include "models/ips_selection.h"
#include "models/resnet.h"
#include "tests/data/data_test_util.h"
#include "train/batch.h"
#include "train/config.h"
#include "train/methods/ips.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

// The IPS network of a trainer running the ips method.
IPSNet& ips_net(train::Trainer& t) { return dynamic_cast<train::IPSMethod&>(t.method()).net(); }

using testing_data::TempDir;

// Gives every BatchNorm non-trivial affine parameters and running statistics.
void randomize_bn(Module& m, Generator& g) {
  NoGradGuard ng;
  if (auto* bn = dynamic_cast<BatchNormBase*>(&m)) {
    const int64_t c = bn->options().num_features();
    bn->weight_.copy_(ops::add(ops::mul(Tensor::rand({c}, g), 1.5), 0.25));
    bn->bias_.copy_(ops::mul(Tensor::randn({c}, g), 0.2));
    bn->running_mean_.copy_(ops::mul(Tensor::randn({c}, g), 0.3));
    bn->running_var_.copy_(ops::add(Tensor::rand({c}, g), 0.5));
  }
  for (auto& c : m.named_children()) randomize_bn(*c.second, g);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.contiguous().to_vector<float>(), y = b.contiguous().to_vector<float>();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(x[i]) - y[i]));
  return m;
}

TEST(FoldBn, MatchesConvThenBatchNormInEvalMode) {
  for (int depth : {18, 50}) {
    Generator g(3);
    ResNet net(ResNetOptions().depth(depth).in_channels(1).n_res_blocks(2), g);
    randomize_bn(net, g);
    net.eval();
    Tensor x = Tensor::rand({5, 1, 40, 40}, g);  // (n, 1, h, w)
    NoGradGuard ng;
    Tensor plain = net.forward(x);
    net.set_fold_bn(true);
    Tensor folded = net.forward(x);
    double scale = 0;
    for (float v : plain.to_vector<float>()) scale = std::max(scale, std::fabs(static_cast<double>(v)));
    EXPECT_LT(max_abs_diff(plain, folded), 1e-4 * std::max(1.0, scale)) << "resnet" << depth;
    // Folded weights follow parameter changes (recomputed at every forward).
    net.bn1_->weight_.copy_(ops::mul(net.bn1_->weight_, 0.5));
    net.set_fold_bn(false);
    Tensor plain2 = net.forward(x);
    net.set_fold_bn(true);
    EXPECT_LT(max_abs_diff(plain2, net.forward(x)), 1e-4 * std::max(1.0, scale)) << "resnet" << depth;
    EXPECT_GT(max_abs_diff(plain, plain2), 1e-3) << "the parameter change must matter";
  }
}

TEST(FoldBn, NoEffectInTrainingOrWithGradients) {
  Generator g(4);
  ResNet net(ResNetOptions().depth(18).in_channels(1).n_res_blocks(2), g);
  randomize_bn(net, g);
  Tensor x = Tensor::rand({3, 1, 32, 32}, g);
  net.eval();
  Tensor plain = net.forward(x);  // grad enabled: the two-layer path
  net.set_fold_bn(true);
  Tensor with_grad = net.forward(x);
  EXPECT_EQ(plain.to_vector<float>(), with_grad.to_vector<float>());
  EXPECT_TRUE(with_grad.requires_grad());
}

// Class-dependent synthetic digits (c+1 bars), as in tests/train.
void make_digits(const std::string& dir, int per_class, uint64_t seed, const std::string& prefix) {
  std::vector<uint8_t> img, lab;
  const int n = per_class * 10;
  testing_data::put_be32(img, 0x803), testing_data::put_be32(img, n), testing_data::put_be32(img, 28),
      testing_data::put_be32(img, 28);
  testing_data::put_be32(lab, 0x801), testing_data::put_be32(lab, n);
  Generator g(seed, 3);
  for (int i = 0; i < n; ++i) {
    const int c = i % 10;
    lab.push_back(static_cast<uint8_t>(c));
    for (int r = 0; r < 28; ++r)
      for (int col = 0; col < 28; ++col) {
        bool bar = r >= 2 && (r - 2) % 2 == 0 && (r - 2) / 2 <= c && col >= 4 && col < 24;
        img.push_back(static_cast<uint8_t>(bar ? 200 + static_cast<int>(g.randint(56)) : 0));
      }
  }
  testing_data::write_file(dir + "/" + prefix + "-images-idx3-ubyte", img, false);
  testing_data::write_file(dir + "/" + prefix + "-labels-idx1-ubyte", lab, false);
}

struct Data {
  TempDir tmp;
  std::string dir;
  Data() {
    std::string digits = tmp / "digits";
    std::filesystem::create_directories(digits);
    make_digits(digits, 8, 1, "train");
    make_digits(digits, 4, 2, "t10k");
    data::MegapixelOptions o = data::default_options("ips");
    o.n_train = 16;
    o.n_test = 8;
    o.width = 168;
    o.height = 168;
    o.n_noise = 3;
    o.threads = 1;
    dir = tmp / "mm";
    data::generate_dataset(o, data::load_idx_dir(digits), dir, false);
  }
};

// Per image, the selected indices in ascending order.
std::vector<std::vector<int64_t>> sorted_rows(const Tensor& idx) {
  std::vector<int64_t> v = idx.to_vector<int64_t>();
  const int64_t B = idx.size(0), M = idx.size(1);
  std::vector<std::vector<int64_t>> out;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> row(v.begin() + b * M, v.begin() + (b + 1) * M);
    std::sort(row.begin(), row.end());
    out.push_back(row);
  }
  return out;
}

TEST(Shortcuts, SameSelectedPatchesInEveryLoadingMode) {
  Data d;
  TempDir out;
  train::Config c = train::parse_config(
      "n_epoch: 1\nn_epoch_warmup: 0\nB: 8\nB_seq: 8\nM: 4\nI: 7\npatch_size: 28\npatch_stride: 28\n"
      "lr: 0.001\nwd: 0.0\nseed: 2\n",
      "test");
  c.data_dir = d.dir;
  c.out_dir = out.path;
  c.run_name = "run";
  c.device = "cpu";
  train::Trainer t(c, true);
  // Two optimizer steps: trained weights and non-trivial running statistics.
  t.train_step({0, 1, 2, 3, 4, 5, 6, 7});
  t.train_step({8, 9, 10, 11, 12, 13, 14, 15});
  const data::DataSource& rd = t.source("train");
  const std::vector<int64_t> ids = {0, 3, 5, 9, 12};
  const int64_t N = t.config().N;

  IPSOptions plain;
  plain.M = 4;
  plain.I = 7;
  plain.dedup_zero = false;
  plain.dedup_identical = false;
  plain.fold_bn = false;
  Generator g0(11);
  train::LazySource ref_src(rd, ids, Device::cpu());
  SelectionResult ref = ips_select(ips_net(t), ref_src, plain, g0);
  EXPECT_EQ(ref.n_encoded, static_cast<int64_t>(ids.size()) * N);

  for (bool eager : {false, true})
    for (bool dedup : {false, true})
      for (bool fold : {false, true}) {
        IPSOptions o = plain;
        o.dedup_zero = dedup;
        o.dedup_identical = dedup;
        o.fold_bn = fold;
        Generator g(11);
        std::unique_ptr<PatchSource> src;
        if (eager)
          src = std::make_unique<train::EagerSource>(rd, ids, Device::cpu());
        else
          src = std::make_unique<train::LazySource>(rd, ids, Device::cpu());
        SelectionResult r = ips_select(ips_net(t), *src, o, g);
        const std::string what = std::string(eager ? "eager" : "lazy") + " dedup " + (dedup ? "on" : "off") +
                                 " fold " + (fold ? "on" : "off");
        EXPECT_EQ(sorted_rows(r.idx), sorted_rows(ref.idx)) << what;
        if (!fold) {
          EXPECT_EQ(r.idx.to_vector<int64_t>(), ref.idx.to_vector<int64_t>()) << what;
        }
        EXPECT_LT(max_abs_diff(r.scores, ref.scores), 1e-4) << what;
        if (dedup) {
          EXPECT_LT(r.n_encoded, ref.n_encoded) << what;
        } else {
          EXPECT_EQ(r.n_encoded, ref.n_encoded) << what;
        }
      }
  // The encoder's own setting is restored after a folded selection.
  auto* resnet = dynamic_cast<ResNet*>(ips_net(t).encoder_.get());
  ASSERT_NE(resnet, nullptr);
  EXPECT_FALSE(resnet->fold_bn());
}

}  // namespace
}  // namespace ipsnet
