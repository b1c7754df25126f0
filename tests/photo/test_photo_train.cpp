// Photographs end to end: generated RGB photos (JPEG when built with libjpeg,
// else PNG) -> ipsnet import-images -> ipsnet train (3 input channels,
// ImageNet normalisation, lazy and eager) -> ipsnet eval; and the config key
// `normalize` refused for canvases.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/photo_codec.h"
#include "tests/data/data_test_util.h"
#include "tests/photo/photo_test_util.h"
#include "tests/train/tiny_data.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

namespace fs = std::filesystem;
using testing_photo::make_pixels;
using testing_photo::TempDir;
using testing_photo::write_bytes;

// 96x128 textured scenes with one 24x24 square, red for class "red", blue for "blue".
void make_scenes(const std::string& dir, int per_class, uint32_t seed) {
  const int64_t H = 96, W = 128;
  for (int cls = 0; cls < 2; ++cls)
    for (int k = 0; k < per_class; ++k) {
      const uint32_t s = seed + 100 * cls + k;
      std::vector<uint8_t> px = make_pixels(H, W, 3, s);
      for (auto& v : px) v = static_cast<uint8_t>(60 + v / 4);  // dull background
      const int64_t r0 = (s * 37) % (H - 24), c0 = (s * 53) % (W - 24);
      for (int64_t y = r0; y < r0 + 24; ++y)
        for (int64_t x = c0; x < c0 + 24; ++x) {
          uint8_t* p = &px[static_cast<size_t>((y * W + x) * 3)];
          p[0] = cls == 0 ? 230 : 20;
          p[1] = 20;
          p[2] = cls == 0 ? 20 : 230;
        }
      const std::string name = dir + (cls == 0 ? "/red/" : "/blue/") + std::to_string(k);
      if (data::jpeg_supported())
        write_bytes(name + ".jpg", data::encode_jpeg(px.data(), H, W, 3, 90));
      else
        write_bytes(name + ".png", data::encode_png(px.data(), H, W, 3));
    }
}

TEST(PhotoTrain, import_train_eval_end_to_end) {
  TempDir t;
  make_scenes(t / "src/train", 6, 1);
  make_scenes(t / "src/test", 3, 500);
  const std::string bin = IPSNET_BINARY;
  std::string text;
  ASSERT_EQ(testing_data::run_capture(bin + " import-images --quiet " + (t / "src") + " " + (t / "data"), &text), 0)
      << text;
  ASSERT_EQ(testing_data::run_capture(bin + " data-info " + (t / "data"), &text), 0) << text;
  EXPECT_NE(text.find("12 photographs, 3 channels"), std::string::npos) << text;
  EXPECT_NE(text.find("0=blue:6 1=red:6"), std::string::npos) << text;
  std::ofstream(t / "cfg.yaml") << "dataset: photos\nn_epoch: 1\nn_epoch_warmup: 0\nB: 4\nB_seq: 4\neager: false\n"
                                   "M: 2\nI: 4\npatch_size: 32\npatch_stride: 32\nn_chan_in: 3\nnormalize: imagenet\n"
                                   "use_pos: false\nn_token: 1\nD: 32\nH: 2\nD_k: 16\nD_v: 16\nD_inner: 64\n"
                                   "enc_type: resnet18\nn_res_blocks: 2\ndevice: cpu\nseed: 3\nrun_name: run\n"
                                   "tasks:\n  task0: {id: 0, name: label, act_fn: softmax, metric: accuracy, "
                                   "n_class: 2}\n";
  for (const char* eager : {"false", "true"}) {
    const std::string out = t / (std::string("runs_") + eager);
    ASSERT_EQ(testing_data::run_capture(bin + " train --quiet --config " + (t / "cfg.yaml") + " --data " +
                                            (t / "data") + " --out " + out + " --set 'augment_jitter=0.1;augment_translate=8;eager=" + eager + "'",
                                        &text),
              0)
        << text;
    ASSERT_TRUE(fs::exists(out + "/run/checkpoint_best.safetensors")) << text;
    ASSERT_EQ(testing_data::run_capture(bin + " eval --quiet --checkpoint " + out +
                                            "/run/checkpoint_best.safetensors --predictions " + out + "/p.csv",
                                        &text),
              0)
        << text;
    EXPECT_NE(text.find("mean metric"), std::string::npos) << text;
    std::ifstream p(out + "/p.csv");
    int lines = 0;
    for (std::string l; std::getline(p, l);) ++lines;
    EXPECT_EQ(lines, 1 + 6);  // header + the test images
  }
  // The wrong channel count is one clear line.
  ASSERT_EQ(testing_data::run_capture(bin + " train --quiet --config " + (t / "cfg.yaml") + " --data " +
                                          (t / "data") + " --out " + (t / "r2") + " --set n_chan_in=1",
                                      &text),
            2);
  EXPECT_NE(text.find("3 channel"), std::string::npos) << text;
}

TEST(PhotoTrain, normalize_is_refused_for_canvases) {
  testing_data::TempDir out;
  train::Config c = testing_train::tiny_config(out.path);
  c.normalize = "imagenet";
  try {
    train::Trainer t(c, true);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("normalize"), std::string::npos) << e.what();
  }
  c.normalize = "bogus";
  EXPECT_THROW(train::validate(c), Error);
  c.normalize = "none";
  c.augment_translate = 10;
  try {
    train::Trainer t(c, true);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("augment_translate"), std::string::npos) << e.what();
  }
  c.augment_translate = 0;
  c.augment_jitter = 0.7;
  EXPECT_THROW(train::validate(c), Error);
}

}  // namespace
}  // namespace ipsnet
