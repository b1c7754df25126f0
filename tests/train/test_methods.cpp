// Issue 15: the methods IPS is measured against -- the full-image CNN:
// overfit-a-batch run, the memory error path, whole-image reading.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "data/megapixel_mnist.h"
#include "tests/train/tiny_data.h"
#include "train/images.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

using testing_data::TempDir;
using testing_train::tiny;

train::Config method_config(const std::string& method, const std::string& data_dir, const std::string& out,
                            const std::string& extra = "") {
  train::Config c = train::parse_config(
      "method: " + method +
          "\nn_epoch: 100\nn_epoch_warmup: 0\nB: 8\nB_seq: 8\nM: 4\npatch_size: 28\npatch_stride: 28\n"
          "lr: 0.001\nwd: 0.0\nseed: 5\ntasks: {task0: {name: majority, act_fn: softmax, metric: accuracy}}\n" +
          extra,
      "test");
  c.data_dir = data_dir;
  c.out_dir = out;
  c.run_name = "run";
  c.device = "cpu";
  return c;
}

// Trains `steps` optimizer steps on one batch of 8; returns (first, last) loss.
std::pair<double, double> overfit(train::Trainer& t, int steps) {
  std::vector<int64_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
  double first = t.train_step(ids), last = first;
  for (int s = 1; s < steps; ++s) last = t.train_step(ids);
  return {first, last};
}

// ---- cnn ----------------------------------------------------------------------

TEST(MethodCnn, OverfitsABatch) {
  TempDir out;
  train::Trainer t(method_config("cnn", tiny().dir, out.path, "cnn_scale: 0.5\nlr: 0.003\n"), true);
  EXPECT_EQ(t.method().name(), "cnn");
  TensorDict sd = t.model().state_dict();
  EXPECT_TRUE(sd.contains("encoder.conv1.weight"));
  EXPECT_TRUE(sd.contains("encoder.layer2.0.downsample.0.weight"));
  EXPECT_TRUE(sd.contains("output_layers.majority.0.weight"));
  EXPECT_EQ(sd.at("output_layers.majority.0.weight").shape(), Shape({10, 128}));
  auto [first, last] = overfit(t, 40);
  EXPECT_LT(last, 0.25 * first) << "cnn did not overfit one batch: " << first << " -> " << last;
  // Evaluation and a checkpoint work as for any method.
  train::EvalResult r = t.evaluate("test");
  EXPECT_EQ(r.images, 16);
  t.save_checkpoint(out.path + "/c.safetensors");
  EXPECT_TRUE(std::filesystem::exists(out.path + "/c.safetensors"));
}

TEST(MethodCnn, SaysBeforeAllocatingWhenAStepWillNotFit) {
  TempDir out;
  try {
    train::Trainer t(method_config("cnn", tiny().dir, out.path, "memory_limit_mib: 1\n"), true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("method cnn: a training step on B = 8 images of 168x168 needs about"), std::string::npos) << m;
    EXPECT_NE(m.find("(memory_limit_mib)"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(MethodCnn, ReadImagesDownscales) {
  const auto src = data::open_source(tiny().dir, "test", {28, 28});
  Tensor full = train::read_images(*src, {0, 1}, 1.0, Device::cpu());
  Tensor half = train::read_images(*src, {0, 1}, 0.5, Device::cpu());
  EXPECT_EQ(full.shape(), Shape({2, 1, 168, 168}));
  EXPECT_EQ(half.shape(), Shape({2, 1, 84, 84}));
  // Area interpolation by 2 = the mean of each 2x2 block.
  const float* f = full.data<float>();
  const float* h = half.data<float>();
  double err = 0;
  for (int64_t y = 0; y < 84; ++y)
    for (int64_t x = 0; x < 84; ++x) {
      double m = (f[(2 * y) * 168 + 2 * x] + f[(2 * y) * 168 + 2 * x + 1] + f[(2 * y + 1) * 168 + 2 * x] +
                  f[(2 * y + 1) * 168 + 2 * x + 1]) / 4.0;
      err = std::max(err, std::fabs(m - h[y * 84 + x]));
    }
  EXPECT_LT(err, 1e-6);
}

}  // namespace
}  // namespace ipsnet
