// The "slides" data source (data/slide_source.h): IPS straight on slide
// pixels. Tiles of tiny synthetic slides read through the source equal what
// OpenSlide reads for them, only the requested tiles are read, bad
// directories and settings are one line, and IPS trains its ResNet encoder
// end to end on them through `ipsnet train`.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/slide_source.h"
#include "data/source.h"
#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "engine/common/error.h"
#include "models/safetensors.h"
#include "wsi_test_util.h"

using namespace ipsnet;
using namespace ipsnet::data;
using ipsnet::testing_wsi::run_ipsnet;
using ipsnet::testing_wsi::WsiTempDir;

namespace fs = std::filesystem;

namespace {

// Three slides (train: one normal, one tumour; test: one normal), tiles of
// 32 px at level 1 (64 level-0 px).
void make_tiles(const WsiTempDir& d) {
  std::string out;
  ASSERT_EQ(run_ipsnet("generate-slides --quiet --size 1024 --n-normal 1 --n-tumor 1 --n-test-normal 1 "
                       "--n-test-tumor 0 --seed 3 " + (d / "cam"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("wsi-tiles --quiet --tile-size 32 --level 1 " + (d / "cam") + " " + (d / "tiles"), &out), 0)
      << out;
}

std::string expect_error(const std::string& dir, const std::string& split, const SourceOptions& o,
                         const std::string& needle) {
  try {
    open_source(dir, split, o);
    ADD_FAILURE() << "no error, expected: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(WsiSlideSource, ReadsExactlyTheRequestedTilesAsOpenSlideDoes) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  make_tiles(d);
  if (HasFatalFailure()) return;
  auto src = open_source(d / "tiles", "train", SourceOptions());
  ASSERT_EQ(src->kind(), "slides");
  const auto& ss = dynamic_cast<const SlideSource&>(*src);
  ASSERT_EQ(src->size(), 2);
  EXPECT_FALSE(src->has_pixels());  // never a whole slide
  EXPECT_EQ(src->instance_shape(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(ss.tiles_read(), 0);  // opening reads no tile
  // Labels: normal_001 then tumor_001 in slides.csv.
  EXPECT_EQ(src->classes(0, "metastases"), std::vector<int64_t>{});
  EXPECT_EQ(src->classes(1, "metastases"), std::vector<int64_t>{0});

  // Slide 1 (the tumour slide): three tiles out of order, one repeated.
  const SlideTiles t = read_tiles_file(d / "tiles/tiles/tumor_001.tiles");
  const int64_t N = static_cast<int64_t>(t.tiles.size());
  ASSERT_EQ(src->num_instances(1), N);
  ASSERT_GE(N, 4);
  ASSERT_EQ(t.level, 1);
  ASSERT_EQ(t.read_size, 32);
  src->prefetch(1);
  EXPECT_EQ(ss.tiles_read(), 0);  // prefetch opens the slide, reads no tile
  const int64_t idx[4] = {N - 1, 0, 2, 0};
  std::vector<float> got(4 * 3 * 32 * 32);
  src->read_instances(1, idx, 4, got.data());
  EXPECT_EQ(ss.tiles_read(), 4);  // exactly the tiles asked for
  auto slide = WsiSlide::open(t.slide_path);
  std::vector<uint8_t> rgb(32 * 32 * 3);
  int64_t differ = 0;
  for (int k = 0; k < 4; ++k) {
    const Tile& tile = t.tiles[static_cast<size_t>(idx[k])];
    slide->read_region(tile.x, tile.y, t.level, t.read_size, t.read_size, rgb.data());
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x)
          differ += got[static_cast<size_t>(((k * 3 + c) * 32 + y) * 32 + x)] !=
                    rgb[static_cast<size_t>((y * 32 + x) * 3 + c)] * (1.0f / 255.0f);
  }
  EXPECT_EQ(differ, 0);
  // Not every tile is blank: the comparison can fail.
  float lo = 1, hi = 0;
  for (float v : got) lo = std::min(lo, v), hi = std::max(hi, v);
  EXPECT_LT(lo, hi);

  // patch_size 16: the centre crop; imagenet: (x - mean) / std per channel.
  SourceOptions o;
  o.patch_size = 16;
  o.normalize = "imagenet";
  auto cropped = open_source(d / "tiles", "train", o);
  EXPECT_EQ(cropped->instance_shape(), (std::vector<int64_t>{3, 16, 16}));
  std::vector<float> c16(3 * 16 * 16);
  cropped->read_instances(1, idx, 1, c16.data());
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x)
        ASSERT_FLOAT_EQ(c16[static_cast<size_t>((c * 16 + y) * 16 + x)],
                        (got[static_cast<size_t>((c * 32 + y + 8) * 32 + x + 8)] - mean[c]) / sd[c]);
  EXPECT_EQ(dynamic_cast<const SlideSource&>(*cropped).tiles_read(), 1);

  // Bad requests and settings: one line each.
  const int64_t bad[1] = {N};
  EXPECT_THROW(src->read_instances(1, bad, 1, got.data()), Error);
  EXPECT_EQ(open_source(d / "tiles", "test", SourceOptions())->size(), 1);
  expect_error(d / "tiles", "val", SourceOptions(), "no slides of split 'val' (its splits: train, test)");
  SourceOptions big;
  big.patch_size = 33;
  expect_error(d / "tiles", "train", big, "config key 'patch_size': 33 is larger than the tiles (32 px)");
  SourceOptions jit;
  jit.jitter = 0.1;
  expect_error(d / "tiles", "train", jit, "has no augmentation");
}

TEST(WsiSlideSource, BadDirectoriesAreOneLine) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  make_tiles(d);
  if (HasFatalFailure()) return;
  // slides.csv disagreeing with a tile file: said when the slide is opened.
  std::string csv;
  {
    std::ifstream in(d / "tiles/slides.csv");
    std::stringstream ss;
    ss << in.rdbuf();
    csv = ss.str();
  }
  const size_t p = csv.find("normal_001,train,0,");
  ASSERT_NE(p, std::string::npos) << csv;
  const size_t q = csv.find(',', p + 19);
  std::string bad = csv.substr(0, p + 19) + "99999" + csv.substr(q);
  std::ofstream(d / "tiles/slides.csv") << bad;
  auto src = open_source(d / "tiles", "train", SourceOptions());
  const int64_t idx[1] = {0};
  std::vector<float> x(3 * 32 * 32);
  try {
    src->read_instances(0, idx, 1, x.data());
    ADD_FAILURE() << "no error for a wrong tile count";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tiles but"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("says 99999"), std::string::npos) << e.what();
  }
  // A slide file that is gone: OpenSlide's refusal names it.
  std::ofstream(d / "tiles/slides.csv") << csv;
  fs::remove(d / "cam/training/tumor/tumor_001.tif");
  src = open_source(d / "tiles", "train", SourceOptions());
  EXPECT_THROW(src->read_instances(1, idx, 1, x.data()), Error);
  // Bad header.
  std::ofstream(d / "tiles/slides.csv") << "name,label\n";
  expect_error(d / "tiles", "train", SourceOptions(), "unexpected header");
}

TEST(WsiSlideSource, IpsTrainsItsResNetEndToEndOnSlidePixels) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  make_tiles(d);
  if (HasFatalFailure()) return;
  std::ofstream(d / "c.yaml") << "dataset: camelyon\ndata_dir: " << (d / "tiles") << "\nout_dir: " << (d / "runs")
                              << "\nrun_name: r\nis_image: True\neager: False\nn_chan_in: 3\npatch_size: 32\n"
                                 "normalize: imagenet\nenc_type: resnet18\nn_res_blocks: 2\nB: 2\nB_seq: 1\n"
                                 "n_epoch: 2\nn_epoch_warmup: 0\nlr: 0.001\nwd: 0.1\nuse_pos: False\nM: 2\nI: 4\n"
                                 "D: 16\nH: 2\nD_k: 8\nD_v: 8\nD_inner: 32\nattn_dropout: 0\ndropout: 0\n"
                                 "n_token: 1\nseed: 0\ntasks:\n  task0: {id: 0, name: metastases, act_fn: sigmoid, "
                                 "metric: auc, n_class: 1}\n";
  std::string out;
  ASSERT_EQ(run_ipsnet("train --config " + (d / "c.yaml"), &out), 0) << out;
  EXPECT_NE(out.find("read through OpenSlide"), std::string::npos) << out;
  EXPECT_NE(out.find("epoch 2/2"), std::string::npos) << out;
  ASSERT_TRUE(fs::exists(d / "runs/r/checkpoint_last.safetensors")) << out;
  // The encoder was trained: its first convolution moved from the epoch-1 weights.
  ASSERT_EQ(run_ipsnet("train --config " + (d / "c.yaml") + " --set n_epoch=1 --set run_name=r1", &out), 0) << out;
  const auto w2 = safetensors::load_tensors(d / "runs/r/checkpoint_last.safetensors").at("encoder.conv1.weight");
  const auto w1 = safetensors::load_tensors(d / "runs/r1/checkpoint_last.safetensors").at("encoder.conv1.weight");
  const std::vector<float> v2 = w2.to_vector<float>(), v1 = w1.to_vector<float>();
  ASSERT_EQ(v1.size(), v2.size());
  double moved = 0;
  for (size_t k = 0; k < v1.size(); ++k) moved += std::fabs(v2[k] - v1[k]);
  EXPECT_GT(moved, 0.0);
}
