// `generate-data --style mnist`: one MNIST digit per image, resized
// (bilinear, half-pixel centres) to the canvas; the IPS notebook's setting.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "data/dataset.h"
#include "data/megapixel_mnist.h"
#include "data/mnist.h"
#include "data/resize.h"
#include "data_test_util.h"
#include "engine/common/error.h"
#include "engine/random/generator.h"

using namespace ipsnet;
using ipsnet::testing_data::TempDir;

namespace {

const data::DigitSource& digits() {  // 6 train / 3 test digits per class
  static data::DigitSource src = [] {
    TempDir d;
    testing_data::make_idx_dir(d.path, 6, 3, true);
    return data::load_idx_dir(d.path);
  }();
  return src;
}

data::MegapixelOptions small() {
  data::MegapixelOptions o = data::default_options("mnist");
  o.width = o.height = 100;
  o.n_train = 20;
  o.n_test = 10;
  o.threads = 2;
  return o;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The source digit's pixel (r, c) in [0, 1].
float px(const data::DigitSet& s, int64_t i, int64_t r, int64_t c) { return s.digit(i)[r * 28 + c] / 255.0f; }

}  // namespace

TEST(MnistStyle, Defaults) {
  auto o = data::default_options("mnist");
  EXPECT_EQ(o.width, 500);
  EXPECT_EQ(o.height, 500);
  EXPECT_EQ(o.n_train, 10000);
  EXPECT_EQ(o.n_test, 1000);
  EXPECT_EQ(o.n_noise, 0);
  EXPECT_NO_THROW(data::validate_options(o));
  // Any canvas: the five-digit fit check does not apply.
  o.width = o.height = 20;
  EXPECT_NO_THROW(data::validate_options(o));
  o.digit_size = 40;
  EXPECT_NE(error_of([&] { data::validate_options(o); }).find("only supported by --style pineneedle"),
            std::string::npos);
  EXPECT_NE(error_of([] { data::default_options("mosaic"); }).find("or mnist"), std::string::npos);
}

TEST(MnistStyle, BilinearMatchesHandComputedValues) {
  // 2x2 -> 4x4: x = (o + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
  const float src[4] = {0.0f, 1.0f, 0.5f, 0.25f};
  float dst[16];
  data::resize_bilinear(src, 2, 2, dst, 4, 4);
  EXPECT_FLOAT_EQ(dst[0], 0.0f);
  EXPECT_FLOAT_EQ(dst[1], 0.25f);            // row 0, x = 0.25
  EXPECT_FLOAT_EQ(dst[3], 1.0f);             // clamped corner
  EXPECT_FLOAT_EQ(dst[15], 0.25f);           // clamped corner
  EXPECT_FLOAT_EQ(dst[1 * 4 + 1], 0.75f * 0.25f + 0.25f * (0.75f * 0.5f + 0.25f * 0.25f));  // y = x = 0.25
  // Upscaling a constant stays constant.
  const float ones[4] = {0.6f, 0.6f, 0.6f, 0.6f};
  data::resize_bilinear(ones, 2, 2, dst, 4, 4);
  for (float v : dst) EXPECT_FLOAT_EQ(v, 0.6f);
}

TEST(MnistStyle, GeneratesOneResizedDigitPerImage) {
  TempDir d;
  auto o = small();
  data::generate_dataset(o, digits(), d / "ds", false);
  for (bool train : {true, false}) {
    const data::DigitSet& set = train ? digits().train : digits().test;
    auto r = data::DatasetReader::open(d / "ds", train ? "train" : "test");
    ASSERT_EQ(r.size(), train ? 20 : 10);
    EXPECT_EQ(r.style(), "mnist");
    EXPECT_EQ(r.height(), 100);
    EXPECT_EQ(r.width(), 100);
    EXPECT_FALSE(r.has_lowres());
    // Image i shows digit perm[i] of a permutation drawn from the split seed's bank stream.
    Generator g(train ? o.seed + 1 : o.seed, data::kBankStream);
    std::vector<int64_t> perm = g.permutation(set.size());
    std::vector<float> img(100 * 100);
    for (int64_t i = 0; i < r.size(); ++i) {
      const int64_t k = perm[i];
      const int label = set.labels[k];
      const auto& m = r.meta(i);
      ASSERT_EQ(m.digits.size(), 1u);
      EXPECT_EQ(m.digits[0].row, 0);
      EXPECT_EQ(m.digits[0].col, 0);
      EXPECT_EQ(m.digits[0].size, 100);
      EXPECT_EQ(m.digits[0].label, label);
      EXPECT_EQ(m.majority, label);
      EXPECT_EQ(m.max, label);
      EXPECT_EQ(m.top, label);
      EXPECT_EQ(m.n_noise, 0);
      for (int c = 0; c < 10; ++c) EXPECT_EQ(m.multi[c], c == label ? 1 : 0);

      r.read_image(i, img.data());
      for (float v : img) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
      // 28 -> 100: source coordinate (o + 0.5) * 0.28 - 0.5, clamped to [0, 27].
      // (40, 50): y = 10.84, x = 13.64.
      double fy = 0.84, fx = 0.64;
      double want = (1 - fy) * ((1 - fx) * px(set, k, 10, 13) + fx * px(set, k, 10, 14)) +
                    fy * ((1 - fx) * px(set, k, 11, 13) + fx * px(set, k, 11, 14));
      EXPECT_NEAR(img[40 * 100 + 50], want, 1e-5) << "image " << i;
      // (30, 71): y = 8.04, x = 19.52.
      fy = 0.04, fx = 0.52;
      want = (1 - fy) * ((1 - fx) * px(set, k, 8, 19) + fx * px(set, k, 8, 20)) +
             fy * ((1 - fx) * px(set, k, 9, 19) + fx * px(set, k, 9, 20));
      EXPECT_NEAR(img[30 * 100 + 71], want, 1e-5) << "image " << i;
      // Corners clamp to the source corners.
      EXPECT_FLOAT_EQ(img[0], px(set, k, 0, 0));
      EXPECT_FLOAT_EQ(img[99 * 100 + 99], px(set, k, 27, 27));
      // The synthetic digits are non-zero exactly in their 20x20 centre [4, 24):
      // output pixel o samples x = (o + 0.5) * 0.28 - 0.5, so rows/cols with
      // x < 3 or x >= 24 are zero, those with 4 <= x <= 23 non-zero.
      EXPECT_EQ(img[50 * 100 + 11], 0.0f);  // x = 2.72: source columns 2 and 3
      EXPECT_GT(img[50 * 100 + 16], 0.0f);  // x = 4.12
      EXPECT_EQ(img[50 * 100 + 88], 0.0f);  // x = 24.28
      // The whole image equals resize_bilinear of the digit.
      std::vector<float> digit(784), want_img(100 * 100);
      for (int p = 0; p < 784; ++p) digit[p] = set.digit(k)[p] / 255.0f;
      data::resize_bilinear(digit.data(), 28, 28, want_img.data(), 100, 100);
      ASSERT_TRUE(img == want_img) << "image " << i;
    }
  }
}

TEST(MnistStyle, DeterministicWhateverTheThreads) {
  TempDir d;
  auto o = small();
  o.threads = 1;
  data::generate_dataset(o, digits(), d / "a", false);
  o.threads = 2;
  data::generate_dataset(o, digits(), d / "b", false);
  for (const char* f : {"train.ipsd", "train.ipsx", "test.ipsd", "test.ipsx", "parameters.json"})
    EXPECT_TRUE(testing_data::read_bytes(d / (std::string("a/") + f)) ==
                testing_data::read_bytes(d / (std::string("b/") + f)))
        << f;
  // Another seed shows other digits.
  o.seed = 5;
  data::generate_dataset(o, digits(), d / "c", false);
  EXPECT_FALSE(testing_data::read_bytes(d / "a/train.ipsd") == testing_data::read_bytes(d / "c/train.ipsd"));
}

TEST(MnistStyle, RefusesMoreImagesThanDigits) {
  TempDir d;
  auto o = small();
  o.n_train = 61;  // 60 train digits
  EXPECT_NE(error_of([&] { data::generate_dataset(o, digits(), d / "x", false); }).find("exceeds the 60 train digits"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(d / "x"));
  o.n_train = 60;  // every digit once
  data::generate_dataset(o, digits(), d / "all", false);
  auto r = data::DatasetReader::open(d / "all", "train");
  int counts[10] = {};
  for (int64_t i = 0; i < r.size(); ++i) ++counts[r.meta(i).majority];
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c], 6) << c;
}

TEST(MnistStyle, OptionalLineNoiseStaysUnderTheDigit) {
  TempDir d;
  auto o = small();
  o.n_noise = 10;
  data::generate_dataset(o, digits(), d / "noisy", false);
  auto r = data::DatasetReader::open(d / "noisy", "train");
  Generator g(o.seed + 1, data::kBankStream);
  std::vector<int64_t> perm = g.permutation(digits().train.size());
  std::vector<float> img(100 * 100), digit(784), clean(100 * 100);
  bool any_noise = false;
  for (int64_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r.meta(i).n_noise, 10);
    r.read_image(i, img.data());
    for (int p = 0; p < 784; ++p) digit[p] = digits().train.digit(perm[i])[p] / 255.0f;
    data::resize_bilinear(digit.data(), 28, 28, clean.data(), 100, 100);
    for (int p = 0; p < 100 * 100; ++p) {
      if (clean[p] != 0.0f)
        ASSERT_EQ(img[p], clean[p]);  // the digit is never occluded
      else if (img[p] != 0.0f)
        any_noise = true;
    }
  }
  EXPECT_TRUE(any_noise);
}

TEST(MnistStyle, CliGenerateAndDataInfo) {
  TempDir d;
  testing_data::make_idx_dir(d.path, 6, 3, false);
  const std::string bin = IPSNET_BINARY;
  std::string out;
  // Default split sizes (10000 / 1000) are capped to the 60 / 30 digits available.
  ASSERT_EQ(testing_data::run_capture(bin + " generate-data --mnist " + d.path +
                                          " --quiet --style mnist --width 120 --height 100 " + (d / "ds"),
                                      &out),
            0)
      << out;
  auto tr = data::DatasetReader::open(d / "ds", "train");
  auto te = data::DatasetReader::open(d / "ds", "test");
  EXPECT_EQ(tr.size(), 60);
  EXPECT_EQ(te.size(), 30);
  EXPECT_EQ(tr.width(), 120);
  EXPECT_EQ(tr.height(), 100);
  EXPECT_EQ(tr.meta(0).digits[0].size, 100);
  const std::vector<uint8_t> param_bytes = testing_data::read_bytes(d / "ds/parameters.json");
  std::string params(param_bytes.begin(), param_bytes.end());
  EXPECT_NE(params.find("\"style\": \"mnist\""), std::string::npos) << params;
  EXPECT_NE(params.find("\"n_train\": 60"), std::string::npos) << params;

  ASSERT_EQ(testing_data::run_capture(bin + " data-info " + (d / "ds"), &out), 0) << out;
  EXPECT_NE(out.find("[train] 60 images, style mnist, canvas 100x120, checksums OK"), std::string::npos) << out;
  EXPECT_NE(out.find("[test] 30 images, style mnist"), std::string::npos) << out;
  EXPECT_NE(out.find("1.00 per image"), std::string::npos) << out;

  // Explicit sizes beyond the digits are refused in one line.
  EXPECT_EQ(testing_data::run_capture(bin + " generate-data --mnist " + d.path +
                                          " --quiet --style mnist --width 100 --height 100 --n-train 61 " +
                                          (d / "x"),
                                      &out),
            2);
  EXPECT_NE(out.find("exceed the 60 train / 30 test digits"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(d / "x"));
  ASSERT_EQ(testing_data::run_capture(bin + " generate-data --help", &out), 0);
  EXPECT_NE(out.find("mnist 10000"), std::string::npos) << out;
}
