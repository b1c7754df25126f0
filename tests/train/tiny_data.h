// A tiny Megapixel MNIST set with learnable synthetic digits and a small IPS
// config over it, shared by the training tests (no download needed).
#pragma once
#include <filesystem>
#include <string>

#include "data/megapixel_mnist.h"
#include "tests/data/data_test_util.h"
#include "train/config.h"
#include "train/methods/ips.h"
#include "train/trainer.h"

namespace ipsnet {
namespace testing_train {

using testing_data::TempDir;

// Class-dependent synthetic digits: class c draws c+1 horizontal bars (and a
// little noise), so a model can learn them.
inline void make_learnable_idx(const std::string& dir, int per_class, uint64_t seed, const std::string& prefix) {
  std::vector<uint8_t> img, lab;
  int n = per_class * 10;
  testing_data::put_be32(img, 0x803), testing_data::put_be32(img, n), testing_data::put_be32(img, 28),
      testing_data::put_be32(img, 28);
  testing_data::put_be32(lab, 0x801), testing_data::put_be32(lab, n);
  Generator g(seed, 3);
  for (int i = 0; i < n; ++i) {
    int c = i % 10;
    lab.push_back(static_cast<uint8_t>(c));
    for (int r = 0; r < 28; ++r)
      for (int col = 0; col < 28; ++col) {
        bool bar = r >= 2 && (r - 2) % 2 == 0 && (r - 2) / 2 <= c && col >= 4 && col < 24;
        int v = bar ? 200 + static_cast<int>(g.randint(56)) : 0;
        img.push_back(static_cast<uint8_t>(v));
      }
  }
  testing_data::write_file(dir + "/" + prefix + "-images-idx3-ubyte", img, false);
  testing_data::write_file(dir + "/" + prefix + "-labels-idx1-ubyte", lab, false);
}

struct TinyData {
  TempDir tmp;
  std::string dir;
  TinyData(int64_t n_train = 32, int64_t n_test = 16, int64_t side = 168) {
    std::string digits = tmp / "digits";
    std::filesystem::create_directories(digits);
    make_learnable_idx(digits, 8, 1, "train");
    make_learnable_idx(digits, 4, 2, "t10k");
    data::MegapixelOptions o = data::default_options("ips");
    o.n_train = n_train;
    o.n_test = n_test;
    o.width = side;
    o.height = side;
    o.n_noise = 3;
    o.threads = 1;
    dir = tmp / "mm";
    data::generate_dataset(o, data::load_idx_dir(digits), dir, false);
  }
};

inline TinyData& tiny() {
  static TinyData* d = new TinyData();
  return *d;
}

inline train::Config tiny_config(const std::string& out) {
  train::Config c = train::parse_config(
      "n_epoch: 2\nn_epoch_warmup: 0\nB: 8\nB_seq: 8\nM: 4\nI: 8\npatch_size: 28\npatch_stride: 28\n"
      "lr: 0.001\nwd: 0.0\ndropout: 0.0\nattn_dropout: 0.0\nseed: 5\n",
      "test");
  c.data_dir = tiny().dir;
  c.out_dir = out;
  c.run_name = "run";
  c.device = "cpu";
  return c;
}

/// The IPS network of a trainer running the ips method.
inline IPSNet& ips_net(train::Trainer& t) { return dynamic_cast<train::IPSMethod&>(t.method()).net(); }

}  // namespace testing_train
}  // namespace ipsnet
