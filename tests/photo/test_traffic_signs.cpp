// The Swedish Traffic Signs task: the reference's annotation rules, split
// sets and MD5, and the whole chain on generated scenes (generate-data
// --style signs -> import-traffic-signs -> train -> eval).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/photo_codec.h"
#include "data/photo_dataset.h"
#include "data/traffic_signs.h"
#include "engine/common/error.h"
#include "tests/data/data_test_util.h"
#include "train/config.h"

namespace ipsnet {
namespace {

namespace fs = std::filesystem;

int label_of(const std::string& line) {
  return data::traffic_label(data::parse_sts_annotations(line, "a.txt").at(0));
}

TEST(TrafficSigns, ReferenceRules) {
  EXPECT_EQ(label_of("x.jpg:"), 0);                 // no sign: EMPTY
  EXPECT_EQ(label_of("x.jpg:MISC_SIGNS;"), 0);      // MISC_SIGNS dropped: EMPTY
  EXPECT_EQ(label_of("x.jpg:VISIBLE, 1, 2, 30, 40, PROHIBITORY, 70_SIGN;"), 2);
  // Visibility first, then the larger box.
  EXPECT_EQ(label_of("x.jpg:OCCLUDED, 0, 0, 100, 100, PROHIBITORY, 80_SIGN;VISIBLE, 0, 0, 5, 5, PROHIBITORY, 50_SIGN"),
            1);
  EXPECT_EQ(label_of("x.jpg:VISIBLE, 0, 0, 5, 5, P, 50_SIGN;VISIBLE, 10, 10, 30, 30, P, 80_SIGN;"), 3);
  // First speed limit not VISIBLE, or only other signs: dropped.
  EXPECT_EQ(label_of("x.jpg:BLURRED, 0, 0, 50, 50, P, 50_SIGN;"), -1);
  EXPECT_EQ(label_of("x.jpg:VISIBLE, 0, 0, 50, 50, P, 30_SIGN;VISIBLE, 0, 0, 9, 9, I, PEDESTRIAN_CROSSING"), -1);
  // Trailing junk on coordinates is cut one character at a time.
  auto imgs = data::parse_sts_annotations("\n y.jpg :VISIBLE, 12.5l, 7x)), 30 , 40.25abc, P, 50_SIGN;\n", "a.txt");
  ASSERT_EQ(imgs.size(), 1u);
  EXPECT_EQ(imgs[0].file, "y.jpg");
  EXPECT_EQ(imgs[0].line, 2);
  EXPECT_DOUBLE_EQ(imgs[0].signs[0].x1, 12.5);
  EXPECT_DOUBLE_EQ(imgs[0].signs[0].y1, 7);
  EXPECT_DOUBLE_EQ(imgs[0].signs[0].y2, 40.25);
  // Malformed lines: one error naming the file and line.
  for (const std::string& bad : {std::string("ok.jpg:\nno colon here\n"), std::string("ok.jpg:\nz.jpg:VISIBLE, 1, 2\n"),
                                 std::string("ok.jpg:\nz.jpg:SEEN, 1, 2, 3, 4, P, 50_SIGN\n"),
                                 std::string("ok.jpg:\nz.jpg:VISIBLE, 1, abc, 3, 4, P, 50_SIGN\n")}) {
    try {
      data::parse_sts_annotations(bad, "Set1/annotations.txt");
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'Set1/annotations.txt' line 2"), std::string::npos) << e.what();
    }
  }
}

TEST(TrafficSigns, SplitSetsAndMd5) {
  EXPECT_EQ(data::sts_set_for("train", 0), "Set1");
  EXPECT_EQ(data::sts_set_for("test", 0), "Set2");
  EXPECT_EQ(data::sts_set_for("train", 1), "Set2");
  EXPECT_EQ(data::sts_set_for("test", 1), "Set1");
  EXPECT_EQ(data::md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(data::md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(data::md5_hex(std::string(1000, 'a')), "cabe45dcc9ae5b66ba86600cca6b8ba8");
}

TEST(TrafficSigns, ConfigsParse) {
  for (const char* name : {"traffic_official.yaml", "traffic_synthetic.yaml"}) {
    train::Config c = train::load_config(std::string(IPSNET_SOURCE_DIR) + "/configs/" + name);
    train::validate(c);
    EXPECT_EQ(c.n_chan_in, 3) << name;
    EXPECT_EQ(c.normalize, "imagenet") << name;
    ASSERT_EQ(c.tasks.size(), 1u) << name;
    EXPECT_EQ(c.tasks[0].name, "sign") << name;
    EXPECT_EQ(c.tasks[0].n_class, 4) << name;
  }
}

TEST(TrafficSigns, GeneratedScenesImportTrainEval) {
  if (!data::jpeg_supported()) GTEST_SKIP() << "JPEG support not built (libjpeg62-turbo-dev missing)";
  testing_data::TempDir d;
  fs::create_directories(d / "mnist");
  testing_data::make_idx_dir(d / "mnist", 6, 3);
  const std::string bin = IPSNET_BINARY;
  std::string text;
  ASSERT_EQ(testing_data::run_capture(bin + " generate-data --style signs --quiet --mnist " + (d / "mnist") +
                                          " --n-train 24 --n-test 12 --width 160 --height 120 " + (d / "sts"),
                                      &text),
            0)
      << text;
  ASSERT_TRUE(fs::exists(d / "sts/Set1/annotations.txt"));
  ASSERT_TRUE(fs::exists(d / "sts/Set2/annotations.txt"));
  // The real layout keeps the JPEGs in a subfolder: move Set2's there.
  fs::create_directories(d / "sts/Set2/Set2Part0");
  for (const auto& e : fs::directory_iterator(d / "sts/Set2"))
    if (e.path().extension() == ".jpg") fs::rename(e.path(), d / ("sts/Set2/Set2Part0/" + e.path().filename().string()));
  ASSERT_EQ(testing_data::run_capture(bin + " import-traffic-signs --quiet --resize 0 0 " + (d / "sts") + " " +
                                          (d / "data"),
                                      &text),
            0)
      << text;
  EXPECT_NE(text.find("has MD5"), std::string::npos) << text;  // not the original annotations
  auto r = data::PhotoReader::open(d / "data", "test");
  ASSERT_EQ(r.tasks().size(), 1u);
  EXPECT_EQ(r.tasks()[0].name, "sign");
  EXPECT_EQ(r.tasks()[0].classes, data::traffic_sign_classes());
  EXPECT_EQ(r.entry(0).height, 120);
  EXPECT_EQ(r.entry(0).path.rfind("Set2/Set2Part0/", 0), 0u) << r.entry(0).path;
  std::ofstream(d / "cfg.yaml") << "dataset: traffic\nn_epoch: 1\nn_epoch_warmup: 0\nB: 4\nB_seq: 4\neager: false\n"
                                   "M: 2\nI: 4\npatch_size: 40\npatch_stride: 40\nn_chan_in: 3\nnormalize: imagenet\n"
                                   "use_pos: false\nn_token: 1\nD: 32\nH: 2\nD_k: 16\nD_v: 16\nD_inner: 64\n"
                                   "enc_type: resnet18\nn_res_blocks: 2\ndevice: cpu\nrun_name: run\n"
                                   "tasks:\n  task0: {id: 0, name: sign, act_fn: softmax, metric: accuracy, "
                                   "n_class: 4}\n";
  ASSERT_EQ(testing_data::run_capture(bin + " train --quiet --config " + (d / "cfg.yaml") + " --data " +
                                          (d / "data") + " --out " + (d / "runs"),
                                      &text),
            0)
      << text;
  ASSERT_EQ(testing_data::run_capture(bin + " eval --quiet --checkpoint " + (d / "runs/run/checkpoint_best.safetensors"),
                                      &text),
            0)
      << text;
  EXPECT_NE(text.find("mean metric"), std::string::npos) << text;
  // A missing file named by the annotations, and a malformed line: one line each, nothing written.
  std::ofstream(d / "sts/Set1/annotations.txt", std::ios::app) << "missing.jpg:VISIBLE, 1, 1, 9, 9, P, 50_SIGN;\n";
  EXPECT_EQ(testing_data::run_capture(bin + " import-traffic-signs --quiet --resize 0 0 " + (d / "sts") + " " +
                                          (d / "data2"),
                                      &text),
            2);
  EXPECT_NE(text.find("'missing.jpg' is not in"), std::string::npos) << text;
  EXPECT_NE(text.find("line 25"), std::string::npos) << text;
  std::ofstream(d / "sts/Set1/annotations.txt", std::ios::app) << "broken line\n";
  EXPECT_EQ(testing_data::run_capture(bin + " import-traffic-signs --quiet " + (d / "sts") + " " + (d / "data2"),
                                      &text),
            2);
  EXPECT_NE(text.find("line 26"), std::string::npos) << text;
  EXPECT_FALSE(fs::exists(d / "data2"));
}

}  // namespace
}  // namespace ipsnet
