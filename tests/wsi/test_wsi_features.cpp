// Feature bags (data/bag_file.h) and `ipsnet extract-features`: the bags hold
// what the encoder computes on the tiles read in-process, pretrained weights
// load, resuming skips finished slides and redoes damaged ones, bad input is
// one line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <unistd.h>

#include "data/bag_file.h"
#include "data/wsi_slide.h"
#include "data/wsi_tiles.h"
#include "engine/engine.h"
#include "models/resnet.h"
#include "models/safetensors.h"
#include "wsi_test_util.h"

using namespace ipsnet;
using namespace ipsnet::data;
using ipsnet::testing_wsi::run_ipsnet;
using ipsnet::testing_wsi::WsiTempDir;

namespace fs = std::filesystem;

TEST(WsiBags, RoundTripTruncationAndChecksums) {
  WsiTempDir d;
  BagInfo info;
  info.name = "tumor_007";
  info.split = "train";
  info.n = 5;
  info.F = 3;
  info.label = 1;
  info.level = 1;
  info.extent0 = 512;
  info.read_size = info.out_size = 256;
  std::vector<float> f(15);
  for (int i = 0; i < 15; ++i) f[i] = 0.5f * i - 2;
  std::vector<int64_t> c = {0, 0, 512, 0, 1024, 0, 0, 512, 512, 512};
  write_bag(d / "a.bag", info, f.data(), c.data());
  auto b = BagReader::open(d / "a.bag");
  EXPECT_EQ(b.info().name, "tumor_007");
  EXPECT_EQ(b.info().split, "train");
  EXPECT_EQ(b.info().n, 5);
  EXPECT_EQ(b.info().F, 3);
  EXPECT_EQ(b.info().label, 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.features()) % 64, 0u);
  EXPECT_FLOAT_EQ(b.row(4)[2], 5.0f);
  EXPECT_EQ(b.coords()[8], 512);
  b.verify();

  std::ifstream in(d / "a.bag", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& name, const std::string& s) {
    std::ofstream o(d / name, std::ios::binary);
    o.write(s.data(), static_cast<std::streamsize>(s.size()));
  };
  write("cut.bag", bytes.substr(0, bytes.size() - 7));
  std::string flip = bytes;
  flip[200] ^= 4;  // inside the features (they start at byte 192)
  write("flip.bag", flip);
  std::string head = bytes;
  head[130] ^= 1;  // inside the name
  write("head.bag", head);
  write("junk.bag", "hello");
  auto expect_error = [&](const std::string& name, const std::string& needle, bool on_verify) {
    try {
      auto r = BagReader::open(d / name);
      if (on_verify) r.verify();
      ADD_FAILURE() << name << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  expect_error("cut.bag", "truncated", false);
  expect_error("flip.bag", "feature checksum", true);
  expect_error("head.bag", "header checksum", false);
  expect_error("junk.bag", "not an ipsnet feature bag", false);
}

namespace {
int64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}
}  // namespace

TEST(WsiBags, WideRowsDoNotStayResident) {
  // 4096 rows of 2048 floats (32 MiB): reading every row twice, in a shuffled
  // order, in runs, and verifying the checksums leave the process's resident
  // memory about where it was, and every row reads back as written.
  WsiTempDir d;
  BagInfo info;
  info.name = "wide";
  info.n = 4096;
  info.F = 2048;
  std::vector<float> f(static_cast<size_t>(info.n * info.F));
  for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(i % 9973) * 0.5f;
  std::vector<int64_t> c(static_cast<size_t>(info.n * 2), 0);
  write_bag(d / "w.bag", info, f.data(), c.data());
  auto b = BagReader::open(d / "w.bag");
  Generator g(1);
  std::vector<int64_t> order = g.permutation(info.n);
  std::vector<float> rows(static_cast<size_t>(64 * info.F));
  const int64_t before = rss_bytes();
  int64_t bad = 0;
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) std::sort(order.begin(), order.begin() + 2048);  // consecutive runs too
    for (int64_t s = 0; s < info.n; s += 64) {
      b.read_rows(order.data() + s, 64, rows.data());
      for (int64_t k = 0; k < 64; ++k)
        bad += std::memcmp(rows.data() + k * info.F, f.data() + order[s + k] * info.F, info.F * sizeof(float)) != 0;
    }
  }
  const int64_t grown = rss_bytes() - before;
  EXPECT_EQ(bad, 0);
  EXPECT_LT(grown, 8 << 20) << "resident memory grew by " << grown << " bytes reading a 32 MiB bag";
  b.verify();
  EXPECT_LT(rss_bytes() - before, 8 << 20);
}

TEST(WsiBags, ExtractFeaturesMatchesTheEncoderAndResumes) {
  if (!have_openslide()) GTEST_SKIP() << "built without OpenSlide (IPSNET_OPENSLIDE): whole-slide tests skipped";
  WsiTempDir d;
  std::string out;
  ASSERT_EQ(run_ipsnet("generate-slides --size 512 --levels 3 --n-normal 1 --n-tumor 1 --n-test-normal 0 "
                       "--n-test-tumor 1 --quiet " + (d / "cam"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("wsi-tiles --quiet --tile-size 48 " + (d / "cam") + " " + (d / "tiles"), &out), 0) << out;

  // Weights of a ResNet-18 (2 stages) from seed 5, saved as torchvision names.
  Generator g(5);
  ResNet net(ResNetOptions().depth(18).in_channels(3).n_res_blocks(2), g);
  safetensors::save(d / "w.safetensors", net.state_dict());
  const std::string common = "--depth 18 --n-res-blocks 2 --crop 32 --batch 5 --device cpu --pretrained " +
                             (d / "w.safetensors") + " " + (d / "tiles") + " " + (d / "bags");
  ASSERT_EQ(run_ipsnet("extract-features " + common, &out), 0) << out;
  EXPECT_NE(out.find("tiles/s"), std::string::npos) << out;
  EXPECT_NE(out.find("ETA"), std::string::npos) << out;

  // Every bag equals the encoder's output on the tiles read here.
  net.eval();
  int64_t n_bags = 0;
  for (const char* name : {"normal_001", "tumor_001", "test_001"}) {
    SlideTiles t = read_tiles_file(d / ("tiles/tiles/" + std::string(name) + ".tiles"));
    auto bag = BagReader::open(d / ("bags/bags/" + std::string(name) + ".bag"));
    bag.verify();
    ASSERT_EQ(bag.info().n, static_cast<int64_t>(t.tiles.size())) << name;
    ASSERT_EQ(bag.info().F, 128);
    EXPECT_EQ(bag.info().label, std::string(name) == "normal_001" ? 0 : 1);
    auto slide = WsiSlide::open(t.slide_path);
    const int64_t n = bag.info().n;
    Tensor x = Tensor::empty({n, 3, 32, 32});
    for (int64_t i = 0; i < n; ++i) read_tile(*slide, t, t.tiles[i], 32, "imagenet", x.data<float>() + i * 3 * 32 * 32);
    NoGradGuard ng;
    Tensor y = net.forward(x).contiguous();
    double max_err = 0;
    for (int64_t i = 0; i < n * 128; ++i) max_err = std::max(max_err, std::fabs(double(y.data<float>()[i]) - bag.features()[i]));
    EXPECT_LT(max_err, 1e-4) << name;  // batches of 5 there, one batch here
    EXPECT_EQ(bag.coords()[0], t.tiles[0].x);
    ++n_bags;
  }
  EXPECT_EQ(n_bags, 3);

  // Resume: nothing to do; a missing and a truncated bag are extracted again, the others kept.
  auto mtime = fs::last_write_time(d / "bags/bags/normal_001.bag");
  ASSERT_EQ(run_ipsnet("extract-features " + common, &out), 0) << out;
  EXPECT_NE(out.find("3 slides already done"), std::string::npos) << out;
  fs::remove(d / "bags/bags/tumor_001.bag");
  fs::resize_file(d / "bags/bags/test_001.bag", 200);
  ASSERT_EQ(run_ipsnet("extract-features " + common, &out), 0) << out;
  EXPECT_NE(out.find("test_001: the existing bag does not match"), std::string::npos) << out;
  EXPECT_NE(out.find("1 slides already done"), std::string::npos) << out;
  EXPECT_EQ(fs::last_write_time(d / "bags/bags/normal_001.bag"), mtime);
  BagReader::open(d / "bags/bags/test_001.bag").verify();
  std::ifstream csv(d / "bags/bags.csv");
  std::string all((std::istreambuf_iterator<char>(csv)), std::istreambuf_iterator<char>());
  EXPECT_NE(all.find("tumor_001,train,1,"), std::string::npos) << all;
  EXPECT_NE(all.find("test_001,test,1,"), std::string::npos) << all;

  // Other settings into the same directory, and bad input: one line each.
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    EXPECT_NE(run_ipsnet("extract-features " + args, &out), 0) << args;
    EXPECT_NE(out.find(needle), std::string::npos) << args << "\n" << out;
  };
  expect_error("--depth 18 --n-res-blocks 2 --crop 16 --pretrained " + (d / "w.safetensors") + " " + (d / "tiles") +
                   " " + (d / "bags"),
               "extracted with other settings");
  expect_error("--depth 18 --crop 64 " + (d / "tiles") + " " + (d / "b2"), "larger than the tiles");
  expect_error("--depth 19 " + (d / "tiles") + " " + (d / "b3"), "--depth 19: expected 18, 34 or 50");
  expect_error((d / "cam") + " " + (d / "b4"), "has no slides.csv");
}
