// The generate-data / data-info / export-npy / import-npy commands, run as a
// user would, including the Python (NumPy) side of the .npy interop.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "data/dataset.h"
#include "data_test_util.h"

using namespace ipsnet;
using ipsnet::testing_data::run_capture;
using ipsnet::testing_data::TempDir;

namespace {

const std::string kBin = IPSNET_BINARY;
const std::string kScript = std::string(IPSNET_SOURCE_DIR) + "/scripts/npy_convert.py";

bool have_numpy() {
  return std::filesystem::exists("/usr/bin/python3") &&
         std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

int run_ipsnet(const std::string& args, std::string* out = nullptr) {
  return run_capture(kBin + " " + args, out);
}

void expect_same_images(const std::string& a, const std::string& b, bool same_meta) {
  for (const char* split : {"train", "test"}) {
    auto ra = data::DatasetReader::open(a, split);
    auto rb = data::DatasetReader::open(b, split);
    ASSERT_EQ(ra.size(), rb.size());
    ASSERT_EQ(ra.style(), rb.style());
    ASSERT_EQ(ra.lowres_height(), rb.lowres_height());
    std::vector<float> x(ra.height() * ra.width()), y(x.size());
    for (int64_t i = 0; i < ra.size(); ++i) {
      ra.read_image(i, x.data());
      rb.read_image(i, y.data());
      ASSERT_TRUE(x == y) << split << " image " << i << " differs";
      if (ra.has_lowres()) {
        std::vector<float> lx(ra.lowres_height() * ra.lowres_width()), ly(lx.size());
        ra.read_lowres(i, lx.data());
        rb.read_lowres(i, ly.data());
        ASSERT_TRUE(lx == ly) << split << " low-res image " << i << " differs";
      }
      EXPECT_EQ(ra.meta(i).majority, rb.meta(i).majority);
      if (same_meta) {
        EXPECT_EQ(ra.meta(i).max, rb.meta(i).max);
        EXPECT_EQ(ra.meta(i).top, rb.meta(i).top);
        EXPECT_EQ(ra.meta(i).multi, rb.meta(i).multi);
      }
    }
  }
}

}  // namespace

TEST(CliData, GenerateInfoAndErrors) {
  TempDir d;
  testing_data::make_idx_dir(d / "", 6, 3);
  std::string mn = "--mnist " + d.path + " --quiet";
  std::string out;
  ASSERT_EQ(run_ipsnet("generate-data " + mn + " --style ips --width 200 --height 200 --n-train 6 --n-test 2 "
                   "--n-noise 7 --preview 2 " + (d / "ds"), &out), 0) << out;
  EXPECT_TRUE(std::filesystem::exists(d / "ds/preview/train_00001.png"));
  ASSERT_EQ(run_ipsnet("data-info " + (d / "ds"), &out), 0) << out;
  EXPECT_NE(out.find("[train] 6 images, style ips, canvas 200x200, checksums OK"), std::string::npos) << out;
  EXPECT_NE(out.find("noise placements: 42 total, 7.00 per image"), std::string::npos) << out;
  EXPECT_NE(out.find("object-to-image ratio 1.9600 %"), std::string::npos) << out;  // 28^2 / 200^2
  EXPECT_NE(out.find("non-zero fraction"), std::string::npos) << out;

  struct Case {
    std::string args, needle;
  };
  std::vector<Case> cases = {
      {mn + " " + (d / "ds"), "already exists; pass --force"},
      {mn + " --n-trian 5 " + (d / "x"), "did you mean '--n-train'"},
      {mn + " --width 56 --height 56 --no-noise " + (d / "x"), "cannot hold 5 non-overlapping"},
      {mn + " --style pineneedle --digit-size 400 --width 300 --height 300 " + (d / "x"), "larger than the"},
      {mn + " --n-train many " + (d / "x"), "--n-train expects an integer, got 'many'"},
      {mn + " --style mosaic " + (d / "x"), "--style must be ats, ips or pineneedle"},
      {"--quiet --mnist " + (d / "nope") + " " + (d / "x"), "does not exist"},
      {mn + " --width 200 --height 200 --n-train 2 --n-test 1 /proc/ipsnet_no_write", "cannot create a temporary"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(run_ipsnet("generate-data " + c.args, &out), 2) << c.args;
    EXPECT_NE(out.find(c.needle), std::string::npos) << c.args << "\n" << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line expected:\n" << out;
  }
  EXPECT_FALSE(std::filesystem::exists(d / "x"));
  EXPECT_EQ(run_ipsnet("generate-data --help", &out), 0);
  EXPECT_NE(out.find("--n-noise"), std::string::npos);
  EXPECT_EQ(run_ipsnet("data-info " + (d / "nope"), &out), 2);
}

TEST(CliData, FlatRoundTripWithoutPython) {
  TempDir d;
  testing_data::make_idx_dir(d / "", 6, 3);
  std::string out;
  ASSERT_EQ(run_ipsnet("generate-data --mnist " + d.path + " --quiet --style ats --width 300 --height 300 --scale 0.2 "
                   "--n-train 5 --n-test 3 " + (d / "ds"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("export-npy --flat " + (d / "ds") + " " + (d / "flat"), &out), 0) << out;
  ASSERT_EQ(run_ipsnet("import-npy --flat " + (d / "flat") + " " + (d / "back"), &out), 0) << out;
  expect_same_images(d / "ds", d / "back", true);
  auto r = data::DatasetReader::open(d / "back", "train");
  EXPECT_EQ(r.meta(0).digits.size(), 5u);  // the flat layout keeps digit boxes
}

TEST(CliData, ReferenceNpyRoundTrip) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with NumPy is needed (apt-get install python3-numpy)";
  TempDir d;
  testing_data::make_idx_dir(d / "", 6, 3);
  std::string out;
  for (const char* style : {"ats", "ips"}) {
    std::string ds = d / (std::string(style) + "_ds"), ref = d / (std::string(style) + "_ref"),
                back = d / (std::string(style) + "_back");
    ASSERT_EQ(run_ipsnet("generate-data --mnist " + d.path + " --quiet --style " + style +
                     " --width 300 --height 300 --n-train 5 --n-test 3 " + ds, &out), 0) << out;
    ASSERT_EQ(run_ipsnet("export-npy --script " + kScript + " " + ds + " " + ref, &out), 0) << out;
    // The reference layout, checked from NumPy.
    std::string check =
        std::string("/usr/bin/python3 -c \"import numpy as np, json, sys\n") +
        "a = np.load('" + ref + "/train.npy', allow_pickle=True)\n"
        "p = json.load(open('" + ref + "/parameters.json'))\n"
        "assert a.dtype == object and a.shape == (5,), a.shape\n"
        "assert p['width'] == 300 and p['n_train'] == 5\n"
        "e = a[0]\n"
        "if '" + style + "' == 'ats':\n"
        "  (il, vl), (ih, vh), y = e\n"
        "  assert il.dtype == np.int64 and vh.dtype == np.float32 and y.dtype == np.float64 and y.sum() == 1\n"
        "  assert ih.max() < 300 * 300 and vh.min() > 0 and vh.max() <= 1 and il.max() < 36 * 36\n"
        "else:\n"
        "  assert set(e) == {'input', 'majority', 'max', 'top', 'multi'}, e.keys()\n"
        "  idx, val = e['input']\n"
        "  assert idx.dtype == np.int64 and val.dtype == np.float32 and e['multi'][e['majority']] == 1\n"
        "\"";
    ASSERT_EQ(run_capture(check, &out), 0) << out;
    ASSERT_EQ(run_ipsnet("import-npy --script " + kScript + " " + ref + " " + back, &out), 0) << out;
    expect_same_images(ds, back, std::string(style) != "ats");
    EXPECT_EQ(run_ipsnet("import-npy --script " + kScript + " " + (d / "nope") + " " + (d / "nope_back"), &out), 2);
  }
}
