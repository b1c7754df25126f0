// Megapixel MNIST generators and the dataset format.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/dataset.h"
#include "data/megapixel_mnist.h"
#include "data/mnist.h"
#include "data/png_writer.h"
#include "data/resize.h"
#include "data_test_util.h"
#include "engine/common/error.h"

using namespace ipsnet;
using ipsnet::testing_data::TempDir;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const data::DigitSource& digits() {
  static data::DigitSource src = [] {
    TempDir d;
    testing_data::make_idx_dir(d.path, 6, 3, true);
    return data::load_idx_dir(d.path);
  }();
  return src;
}

data::MegapixelOptions small(const std::string& style) {
  data::MegapixelOptions o = data::default_options(style);
  o.width = o.height = 240;
  o.n_train = 24;
  o.n_test = 8;
  o.n_noise = 15;
  o.threads = 2;
  if (style == "pineneedle") o.n_noise = 30;
  o.scale = 0.25;
  return o;
}

std::string generate(const data::MegapixelOptions& o, const std::string& out, bool force = false) {
  data::generate_dataset(o, digits(), out, force);
  return out;
}

}  // namespace

TEST(Megapixel, LabelsRecomputedFromMetadata) {
  for (const char* style : {"ats", "ips", "pineneedle"}) {
    TempDir d;
    auto o = small(style);
    generate(o, d / "ds");
    for (const char* split : {"train", "test"}) {
      auto r = data::DatasetReader::open(d / "ds", split);
      ASSERT_EQ(r.size(), std::string(split) == "train" ? o.n_train : o.n_test);
      EXPECT_EQ(r.style(), style);
      for (int64_t i = 0; i < r.size(); ++i) {
        const auto& m = r.meta(i);
        ASSERT_EQ(m.digits.size(), 5u);
        int counts[10] = {};
        int mx = -1;
        const data::DigitInfo* top = &m.digits[0];
        std::array<uint8_t, 10> multi{};
        for (const auto& g : m.digits) {
          ++counts[g.label];
          mx = std::max(mx, g.label);
          multi[g.label] = 1;
          if (g.row < top->row || (g.row == top->row && g.col < top->col)) top = &g;
        }
        EXPECT_GE(counts[m.majority], 3);
        // 3 positives of the target, 2 negatives of other classes.
        EXPECT_EQ(m.digits[0].label, m.majority);
        EXPECT_EQ(m.digits[1].label, m.majority);
        EXPECT_EQ(m.digits[2].label, m.majority);
        EXPECT_NE(m.digits[3].label, m.majority);
        EXPECT_NE(m.digits[4].label, m.majority);
        EXPECT_EQ(m.max, mx);
        EXPECT_EQ(m.top, top->label);
        EXPECT_EQ(m.multi, multi);
        EXPECT_EQ(m.n_noise, o.n_noise);
      }
    }
  }
}

TEST(Megapixel, DigitBoxesInsideAndNeverOverlap) {
  TempDir d;
  auto o = small("pineneedle");
  o.digit_size = 40;
  o.noise_size = 30;
  generate(o, d / "ds");
  auto r = data::DatasetReader::open(d / "ds", "train");
  for (int64_t i = 0; i < r.size(); ++i) {
    const auto& g = r.meta(i).digits;
    for (size_t a = 0; a < g.size(); ++a) {
      EXPECT_EQ(g[a].size, 40);
      EXPECT_GE(g[a].row, 0);
      EXPECT_GE(g[a].col, 0);
      EXPECT_LE(g[a].row + g[a].size, r.height());
      EXPECT_LE(g[a].col + g[a].size, r.width());
      for (size_t b = 0; b < a; ++b)
        EXPECT_FALSE(std::abs(g[a].row - g[b].row) < 40 && std::abs(g[a].col - g[b].col) < 40)
            << "image " << i << " digits " << a << " and " << b << " overlap";
    }
  }
}

TEST(Megapixel, IpsDigitsAreNeverOccluded) {
  // In ips (noise first, then digits) every digit box holds an exact source digit.
  TempDir d;
  auto o = small("ips");
  o.n_noise = 60;
  generate(o, d / "ds");
  auto r = data::DatasetReader::open(d / "ds", "train");
  const auto& set = digits().train;
  std::vector<float> box(28 * 28);
  for (int64_t i = 0; i < r.size(); ++i)
    for (const auto& g : r.meta(i).digits) {
      r.read_region(i, g.row, g.col, 28, 28, box.data());
      bool found = false;
      for (int64_t k : set.by_class[g.label]) {
        bool same = true;
        for (int p = 0; p < 784 && same; ++p) same = box[p] == set.digit(k)[p] / 255.0f;
        found = found || same;
      }
      EXPECT_TRUE(found) << "image " << i << ": the digit box at " << g.row << "," << g.col
                         << " is not an intact digit of class " << g.label;
    }
}

TEST(Megapixel, NoisePlacementCountsAndValues) {
  data::MegapixelOptions o = small("ips");
  data::SplitGenerator gen(o, digits().train, true);
  auto ws = gen.make_workspace();
  data::GeneratedImage img = gen.generate(3, *ws);
  EXPECT_EQ(img.meta.n_noise, 15);
  EXPECT_EQ(img.meta.digits.size(), 5u);
  // Without noise only the digits' pixels remain: nnz == sum of digit nnz.
  o.noise = false;
  data::SplitGenerator clean(o, digits().train, true);
  data::GeneratedImage c = clean.generate(3, *ws);
  EXPECT_EQ(c.meta.n_noise, 0);
  EXPECT_EQ(c.high.nnz(), 5 * 20 * 20);  // synthetic digits: 20x20 non-zero centres
  EXPECT_GT(img.high.nnz(), c.high.nnz());
  // Line noise bank: 50 patterns, lit pixels scaled into [0.8, 1].
  Generator g(5, data::kBankStream);
  data::NoiseBank bank = data::make_line_noise_bank(g);
  ASSERT_EQ(bank.count(), 50);
  for (int64_t k = 0; k < bank.count(); ++k) {
    int lit = 0;
    for (int p = 0; p < 784; ++p) {
      float v = bank.pattern(k)[p];
      if (v != 0) {
        ++lit;
        EXPECT_GE(v, 0.8f);
        EXPECT_LE(v, 1.0f);
      }
    }
    EXPECT_GE(lit, 20) << "pattern " << k << " should hold at least one 28-px line";
  }
}

TEST(Megapixel, BezierStrokeWidth) {
  for (int64_t t = 1; t <= 5; ++t) {
    // Horizontal and vertical straight strokes are exactly t pixels wide away from the caps.
    for (bool vertical : {false, true}) {
      std::vector<float> img(28 * 28, 0.0f);
      std::vector<std::pair<double, double>> ctrl = {{4, 14}, {10, 14}, {18, 14}, {23, 14}};
      if (vertical)
        for (auto& p : ctrl) std::swap(p.first, p.second);
      data::draw_polyline(data::bezier_points(ctrl, 100), t, img.data(), 28, 28);
      for (int k = 8; k <= 19; ++k) {
        int count = 0;
        for (int j = 0; j < 28; ++j) count += (vertical ? img[k * 28 + j] : img[j * 28 + k]) != 0;
        EXPECT_EQ(count, t) << "thickness " << t << (vertical ? " vertical" : " horizontal") << " at " << k;
      }
    }
    // A diagonal stroke's perpendicular extent is about t.
    std::vector<float> img(28 * 28, 0.0f);
    data::draw_polyline({{4, 4}, {23, 23}}, t, img.data(), 28, 28);
    int count = 0;
    for (int c = 0; c < 28; ++c) count += img[14 * 28 + c] != 0;  // a row cut crosses t * sqrt(2)
    EXPECT_NEAR(count, t * std::sqrt(2.0), 1.01) << "thickness " << t;
  }
  // Thicker noise has more ink, and the bank's patterns are resized to noise_size.
  Generator g1(1, 9), g2(1, 9);
  auto thin = data::make_bezier_noise_bank(g1, 20, 1, 28);
  auto thick = data::make_bezier_noise_bank(g2, 20, 3, 56);
  EXPECT_EQ(thick.side, 56);
  double a = 0, b = 0;
  for (float v : thin.patterns) a += v;
  for (float v : thick.patterns) b += v;
  EXPECT_GT(b, 2 * 4 * a);  // area x4 from the resize, stroke x~3
}

TEST(Megapixel, ResizeAndRescale) {
  std::vector<float> ones(28 * 28, 1.0f), out(56 * 56), small_out(7 * 7);
  data::resize_area(ones.data(), 28, 28, out.data(), 56, 56);
  for (float v : out) EXPECT_FLOAT_EQ(v, 1.0f);
  std::vector<float> checker(28 * 28);
  for (int i = 0; i < 784; ++i) checker[i] = ((i / 28) + (i % 28)) % 2;
  data::resize_area(checker.data(), 28, 28, small_out.data(), 7, 7);
  for (float v : small_out) EXPECT_NEAR(v, 0.5f, 1e-6);
  int64_t side = 0;
  auto low = data::rescale_antialias(ones.data(), 28, 0.12, &side);
  EXPECT_EQ(side, 3);
  for (float v : low) EXPECT_NEAR(v, 1.0f, 1e-6);
}

TEST(Megapixel, AtsLowResView) {
  TempDir d;
  auto o = small("ats");
  generate(o, d / "ds");
  auto r = data::DatasetReader::open(d / "ds", "train");
  ASSERT_TRUE(r.has_lowres());
  EXPECT_EQ(r.lowres_height(), 60);
  EXPECT_EQ(r.lowres_width(), 60);
  std::vector<float> low(60 * 60);
  for (int64_t i = 0; i < r.size(); ++i) {
    r.read_lowres(i, low.data());
    EXPECT_GT(r.lowres_nnz(i), 0);
    // Every digit leaves ink at int(pos * scale) in the low-res view.
    for (const auto& g : r.meta(i).digits) {
      double ink = 0;
      for (int64_t a = 0; a < 7; ++a)
        for (int64_t b = 0; b < 7; ++b) ink += low[(g.row / 4 + a) * 60 + g.col / 4 + b];
      EXPECT_GT(ink, 0.5) << "image " << i;
    }
  }
  auto ips = data::DatasetReader::open(d / "ds", "test");
  EXPECT_THROW(data::DatasetReader::open(d / "ds", "valid"), Error);
  (void)ips;
}

TEST(Megapixel, ByteIdenticalWhateverTheThreadCount) {
  for (const char* style : {"ats", "pineneedle"}) {
    TempDir d;
    auto o = small(style);
    o.threads = 1;
    generate(o, d / "a");
    o.threads = 5;
    generate(o, d / "b");
    for (const char* f : {"train.ipsd", "train.ipsx", "test.ipsd", "test.ipsx", "parameters.json"}) {
      auto a = testing_data::read_bytes(d / ("a/" + std::string(f)));
      auto b = testing_data::read_bytes(d / ("b/" + std::string(f)));
      EXPECT_FALSE(a.empty());
      EXPECT_TRUE(a == b) << style << " " << f << " differs between 1 and 5 threads";
    }
    // A different seed changes the data; train and test use different seeds.
    o.seed = 3;
    generate(o, d / "c");
    EXPECT_FALSE(testing_data::read_bytes(d / "a/train.ipsd") == testing_data::read_bytes(d / "c/train.ipsd"));
  }
}

TEST(Dataset, RegionReadsMatchTheDenseImage) {
  TempDir d;
  auto o = small("pineneedle");
  generate(o, d / "ds");
  auto r = data::DatasetReader::open(d / "ds", "train");
  const int64_t H = r.height(), W = r.width();
  std::vector<float> full(H * W);
  Generator g(11, 0);
  for (int64_t i = 0; i < 4; ++i) {
    r.read_image(i, full.data());
    int64_t nnz = 0;
    for (float v : full) {
      nnz += v != 0;
      ASSERT_GE(v, 0.0f);
      ASSERT_LE(v, 1.0f);
    }
    EXPECT_EQ(nnz, r.nnz(i));
    for (int k = 0; k < 60; ++k) {
      int64_t h = g.randint(1, 80), w = g.randint(1, 80);
      int64_t r0 = g.randint(-40, H), c0 = g.randint(-40, W);
      std::vector<float> crop(h * w);
      r.read_region(i, r0, c0, h, w, crop.data());
      bool zero = true;
      for (int64_t a = 0; a < h; ++a)
        for (int64_t b = 0; b < w; ++b) {
          int64_t rr = r0 + a, cc = c0 + b;
          float want = rr >= 0 && rr < H && cc >= 0 && cc < W ? full[rr * W + cc] : 0.0f;
          ASSERT_EQ(crop[a * w + b], want) << "image " << i << " region " << r0 << "," << c0;
          zero = zero && want == 0.0f;
        }
      EXPECT_EQ(r.region_is_zero(i, r0, c0, h, w), zero);
    }
  }
  EXPECT_THROW(r.read_image(r.size(), full.data()), Error);
}

TEST(Dataset, DetectsCorruption) {
  TempDir d;
  auto o = small("ips");
  generate(o, d / "ds");
  std::string data_path = d / "ds/train.ipsd", index_path = d / "ds/train.ipsx";
  auto data_bytes = testing_data::read_bytes(data_path);
  auto index_bytes = testing_data::read_bytes(index_path);
  // A flipped value inside image 2's record: open works, reading image 2 fails.
  {
    auto r0 = data::DatasetReader::open(d / "ds", "train");
    auto b = data_bytes;
    int64_t off = 64;
    for (int64_t i = 0; i < 2; ++i) off += r0.record_bytes(i);
    b[off + 200] ^= 0x40;
    testing_data::write_file(data_path, b, false);
  }
  auto r = data::DatasetReader::open(d / "ds", "train");
  std::vector<float> img(r.height() * r.width());
  EXPECT_NO_THROW(r.read_image(1, img.data()));
  std::string e = error_of([&] { r.read_image(2, img.data()); });
  EXPECT_NE(e.find("image 2 fails its checksum"), std::string::npos) << e;
  EXPECT_THROW(r.verify_all(), Error);
  // Truncated data, corrupted index, wrong version.
  testing_data::write_file(data_path, std::vector<uint8_t>(data_bytes.begin(), data_bytes.end() - 8), false);
  e = error_of([&] { data::DatasetReader::open(d / "ds", "train"); });
  EXPECT_FALSE(e.empty());
  testing_data::write_file(data_path, data_bytes, false);
  auto bi = index_bytes;
  bi[64 + 128 + 30] ^= 1;
  testing_data::write_file(index_path, bi, false);
  e = error_of([&] { data::DatasetReader::open(d / "ds", "train"); });
  EXPECT_NE(e.find("index checksum mismatch"), std::string::npos) << e;
  auto bv = data_bytes;
  bv[8] = 9;
  testing_data::write_file(index_path, index_bytes, false);
  testing_data::write_file(data_path, bv, false);
  e = error_of([&] { data::DatasetReader::open(d / "ds", "train"); });
  EXPECT_NE(e.find("format version 9"), std::string::npos) << e;
}

TEST(Megapixel, ErrorPaths) {
  auto o = small("ips");
  o.width = o.height = 56;  // at most 2 x 2 digit boxes fit
  o.noise = false;
  std::string e = error_of([&] { data::validate_options(o); });
  EXPECT_NE(e.find("cannot hold 5 non-overlapping 28x28 digits"), std::string::npos) << e;
  o = small("pineneedle");
  o.digit_size = 300;
  e = error_of([&] { data::validate_options(o); });
  EXPECT_NE(e.find("--digit-size 300 is larger than the 240x240 canvas"), std::string::npos) << e;
  o = small("ips");
  o.digit_size = 40;
  e = error_of([&] { data::validate_options(o); });
  EXPECT_NE(e.find("only supported by --style pineneedle"), std::string::npos) << e;
  o = small("ats");
  o.width = 50;
  e = error_of([&] { data::validate_options(o); });
  EXPECT_NE(e.find("exceed 56x56"), std::string::npos) << e;
  o = small("ats");
  o.scale = 0;
  EXPECT_THROW(data::validate_options(o), Error);
  EXPECT_THROW(data::default_options("mosaic"), Error);
  // Tight canvases that pass the packing bound but defeat random placement fail cleanly.
  o = small("pineneedle");
  o.width = 28 * 5;
  o.height = 28;
  o.noise = false;
  e = error_of([&] {
    TempDir d;
    generate(o, d / "tight");
  });
  EXPECT_NE(e.find("could not place 5 non-overlapping"), std::string::npos) << e;
}

TEST(Megapixel, OutputDirectoryHandling) {
  TempDir d;
  auto o = small("ips");
  o.n_train = 4;
  o.n_test = 2;
  generate(o, d / "ds");
  std::string e = error_of([&] { generate(o, d / "ds"); });
  EXPECT_NE(e.find("already exists; pass --force"), std::string::npos) << e;
  o.seed = 9;
  generate(o, d / "ds", true);
  std::ifstream in(d / "ds/parameters.json");
  std::string params((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(params.find("\"seed\": 9"), std::string::npos);
  EXPECT_NE(params.find("\"digit_source\""), std::string::npos);
  e = error_of([&] { generate(o, "/proc/ipsnet_cannot_write_here"); });
  EXPECT_NE(e.find("cannot create a temporary directory"), std::string::npos) << e;
  e = error_of([&] { generate(o, d / "missing/parent/ds"); });
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  // Nothing half-written is left beside the outputs.
  for (const auto& entry : std::filesystem::directory_iterator(d.path))
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
}

TEST(Megapixel, PreviewPng) {
  TempDir d;
  auto o = small("ips");
  generate(o, d / "ds");
  auto r = data::DatasetReader::open(d / "ds", "train");
  data::write_preview_png(r, 0, d / "p.png");
  auto b = testing_data::read_bytes(d / "p.png");
  ASSERT_GT(b.size(), 100u);
  EXPECT_EQ(b[1], 'P');
  EXPECT_THROW(data::write_png(d / "no/such/dir.png", 2, 2, 1, std::vector<uint8_t>(4)), Error);
}

TEST(Dataset, DiskFullIsReported) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "/dev/full is not available";
  TempDir d;
  // The data file resolves to /dev/full: every write fails with ENOSPC.
  std::filesystem::create_symlink("/dev/full", d / "train.ipsd");
  data::SplitHeader h;
  h.height = h.width = 64;
  h.style = "ips";
  std::string e = error_of([&] {
    data::DatasetWriter w(d.path, "train", h);
    std::vector<float> dense(64 * 64, 0.5f);
    data::SparseImage s = data::SparseImage::from_dense(dense.data(), 64, 64);
    data::ImageMeta m;
    for (int i = 0; i < 200; ++i) w.append(data::encode_record(s, nullptr), s.nnz(), 0, m);
    w.finish();
  });
  EXPECT_NE(e.find("disk full"), std::string::npos) << e;
}
