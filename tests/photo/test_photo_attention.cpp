// Attention maps over colour photographs: generated signs -> import-traffic-signs
// -> train (a few steps) -> eval -> attention-maps, for ips and ats; the PNG
// shows the photo in its own colours (the ImageNet normalisation undone),
// dimmed outside the selected patches, with the selection drawn over it.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/photo_codec.h"
#include "data/photo_dataset.h"
#include "engine/common/error.h"
#include "tests/data/data_test_util.h"
#include "train/attention_map.h"

namespace ipsnet {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// (H, W, 3) of a PNG or JPEG file.
std::vector<uint8_t> decode_file(const std::string& path, int64_t* h, int64_t* w) {
  std::vector<uint8_t> b = read_all(path);
  return data::decode_photo(b.data(), b.size(), 3, path, h, w);
}

const char* kCommon =
    "dataset: traffic\nn_epoch: 1\nn_epoch_warmup: 0\nB: 4\nB_seq: 4\neager: false\nn_chan_in: 3\n"
    "normalize: imagenet\npatch_size: 40\npatch_stride: 40\nn_token: 1\nenc_type: resnet18\nn_res_blocks: 2\n"
    "device: cpu\nrun_name: run\nseed: 1\n"
    "tasks:\n  task0: {id: 0, name: sign, act_fn: softmax, metric: accuracy, n_class: 4}\n";

TEST(PhotoAttention, GeneratedSignsTrainEvalAttentionMaps) {
  if (!data::jpeg_supported()) GTEST_SKIP() << "JPEG support not built (libjpeg62-turbo-dev missing)";
  testing_data::TempDir d;
  fs::create_directories(d / "mnist");
  testing_data::make_idx_dir(d / "mnist", 6, 3);
  const std::string bin = IPSNET_BINARY;
  std::string text;
  ASSERT_EQ(testing_data::run_capture(bin + " generate-data --style signs --quiet --mnist " + (d / "mnist") +
                                          " --n-train 16 --n-test 8 --width 160 --height 120 " + (d / "sts"),
                                      &text),
            0)
      << text;
  ASSERT_EQ(testing_data::run_capture(bin + " import-traffic-signs --quiet --resize 0 0 " + (d / "sts") + " " +
                                          (d / "data"),
                                      &text),
            0)
      << text;
  // The photo of test image 0 as stored (--resize 0 0 keeps the JPEG bytes).
  auto reader = data::PhotoReader::open(d / "data", "test");
  ASSERT_GE(reader.size(), 2);
  int64_t ph = 0, pw = 0;
  const std::vector<uint8_t> photo = decode_file(d / ("sts/" + reader.entry(0).path), &ph, &pw);
  ASSERT_EQ(ph, 120);
  ASSERT_EQ(pw, 160);

  struct Case {
    const char* method;
    const char* keys;
  };
  const Case cases[] = {
      {"ips", "method: ips\nM: 2\nI: 4\nuse_pos: false\nD: 32\nH: 2\nD_k: 16\nD_v: 16\nD_inner: 64\n"},
      {"ats", "method: ats\nM: 2\nscale: 0.25\nn_patches: 2\nats_features: resnet\nats_eval: topk\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method);
    const std::string dir = d / c.method;
    fs::create_directories(dir);
    std::ofstream(dir + "/cfg.yaml") << kCommon << c.keys;
    ASSERT_EQ(testing_data::run_capture(bin + " train --quiet --config " + dir + "/cfg.yaml --data " + (d / "data") +
                                            " --out " + dir + "/runs",
                                        &text),
              0)
        << text;
    const std::string ckpt = dir + "/runs/run/checkpoint_best.safetensors";
    ASSERT_EQ(testing_data::run_capture(bin + " eval --quiet --checkpoint " + ckpt, &text), 0) << text;
    EXPECT_NE(text.find("mean metric"), std::string::npos) << text;
    ASSERT_EQ(testing_data::run_capture(bin + " attention-maps --checkpoint " + ckpt + " --images 0-1 --tiles --out " +
                                            dir + "/maps --max-side 0",
                                        &text),
              0)
        << text;
    int64_t h = 0, w = 0;
    const std::vector<uint8_t> map = decode_file(dir + "/maps/test_0.png", &h, &w);
    ASSERT_EQ(h, 120);
    ASSERT_EQ(w, 160);
    // Outside the selected patches a pixel is the photo dimmed to 35 % in its
    // own colours: the normalisation is undone, and all three channels are drawn.
    int64_t dimmed = 0, coloured = 0;
    uint8_t lo = 255, hi = 0;
    for (int64_t k = 0; k < h * w; ++k) {
      bool match = true;
      for (int ch = 0; ch < 3; ++ch) {
        const size_t j = static_cast<size_t>(k * 3 + ch);
        const double want = 0.35 * photo[j];
        // JPEG decoding in the source and here agree; float rounding of
        // normalise / un-normalise costs at most a unit.
        if (std::fabs(map[j] - want) > 1.01) match = false;
        lo = std::min(lo, map[j]);
        hi = std::max(hi, map[j]);
      }
      dimmed += match;
      const size_t j = static_cast<size_t>(k * 3);
      coloured += std::abs(int(photo[j]) - int(photo[j + 1])) > 40 || std::abs(int(photo[j + 1]) - int(photo[j + 2])) > 40;
    }
    // 12 patches of 40x40, 2 selected: 10/12 of the image is dimmed photo.
    EXPECT_GE(dimmed, h * w * 10 / 12 - 1) << dimmed << " of " << h * w;
    EXPECT_LE(dimmed, h * w * 11 / 12) << "no patch drawn as selected";
    EXPECT_GT(coloured, h * w / 20);  // the scene has colour for the test above to see
    EXPECT_GT(hi - lo, 100);          // not a constant image
    // The tile sheet keeps the colours: 2 patches of 40 px scaled x2 to 80, gaps of 4.
    const std::vector<uint8_t> tiles = decode_file(dir + "/maps/test_0_tiles.png", &h, &w);
    EXPECT_EQ(h, 80 + 2 * 4);
    EXPECT_EQ(w, 2 * 80 + 3 * 4);
    int64_t grey = 0;
    for (int64_t k = 0; k < h * w; ++k) grey += tiles[k * 3] == tiles[k * 3 + 1] && tiles[k * 3 + 1] == tiles[k * 3 + 2];
    EXPECT_LT(grey, h * w) << "the tile sheet lost the colours";
    EXPECT_TRUE(fs::exists(dir + "/maps/test_1.png"));
  }
}

// The renderer alone: an RGB image is drawn in its colours, the heat over it.
TEST(PhotoAttention, RendersRgbImages) {
  PatchGrid g;
  g.height = 8;
  g.width = 12;
  g.patch_h = g.patch_w = g.stride_h = g.stride_w = 4;
  std::vector<float> img(3 * 8 * 12);
  for (int64_t k = 0; k < 8 * 12; ++k) {
    img[k] = 1.0f;             // red
    img[8 * 12 + k] = 0.5f;    // green
    img[2 * 8 * 12 + k] = 0;   // blue
  }
  train::AttentionMapInput in;
  in.image = img.data();
  in.channels = 3;
  in.grid = g;
  in.selected = {4};
  int64_t h = 0, w = 0;
  std::vector<uint8_t> rgb = train::render_attention_map(in, 0, &h, &w);
  ASSERT_EQ(h, 8);
  ASSERT_EQ(w, 12);
  // Unselected pixel (0, 0): the colour at 35 %.
  EXPECT_EQ(rgb[0], std::lround(0.35 * 255));
  EXPECT_EQ(rgb[1], std::lround(0.35 * 0.5 * 255));
  EXPECT_EQ(rgb[2], 0);
  // Inside patch 4 (row 1, col 1), off the outline: 0.55 colour + 0.45 heat of score 1.
  const size_t k = static_cast<size_t>((6 * 12 + 5) * 3);
  EXPECT_EQ(rgb[k], std::lround((0.55 * 1.0 + 0.45 * 1.0) * 255));
  EXPECT_EQ(rgb[k + 1], std::lround((0.55 * 0.5 + 0.45 * 1.0) * 255));
  EXPECT_EQ(rgb[k + 2], std::lround((0.55 * 0.0 + 0.45 * 0.4) * 255));
  std::vector<uint8_t> tiles = train::render_tile_sheet(in, &h, &w);
  ASSERT_EQ(tiles.size(), static_cast<size_t>(h * w * 3));
  const size_t t = static_cast<size_t>((4 * w + 4) * 3);  // first tile's corner
  EXPECT_EQ(tiles[t], 255);
  EXPECT_EQ(tiles[t + 1], 128);
  EXPECT_EQ(tiles[t + 2], 0);
  // Un-normalising ImageNet values gives the pixels back.
  std::vector<float> v = {(0.2f - 0.485f) / 0.229f, (0.7f - 0.456f) / 0.224f, (1.5f - 0.406f) / 0.225f};
  train::denormalize_for_display(v.data(), 3, 1, "imagenet");
  EXPECT_NEAR(v[0], 0.2f, 1e-6);
  EXPECT_NEAR(v[1], 0.7f, 1e-6);
  EXPECT_EQ(v[2], 1.0f);  // clamped
  EXPECT_THROW(train::denormalize_for_display(v.data(), 3, 1, "zscore"), Error);
}

// `ipsnet info` says whether JPEG support was built.
TEST(PhotoAttention, InfoNamesTheCodecs) {
  std::string text;
  ASSERT_EQ(testing_data::run_capture(std::string(IPSNET_BINARY) + " info", &text), 0) << text;
  EXPECT_NE(text.find("photographs    PNG (libpng "), std::string::npos) << text;
  if (data::jpeg_supported())
    EXPECT_NE(text.find("JPEG (libjpeg"), std::string::npos) << text;
  else
    EXPECT_NE(text.find("JPEG not built"), std::string::npos) << text;
}

}  // namespace
}  // namespace ipsnet
