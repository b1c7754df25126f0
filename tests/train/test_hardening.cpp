// Issue 19: an exact resume of the metrics, a non-finite loss that stops the
// run, checked config values, YAML written by an emitter, a locked run
// directory and unique default run names.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>

#include "engine/common/files.h"
#include "tests/data/data_test_util.h"
#include "tests/train/tiny_data.h"
#include "train/config.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

using testing_data::TempDir;
using testing_train::tiny_config;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// metrics.csv without the columns that measure time and memory.
std::string metric_columns(const std::string& path) {
  std::stringstream in(read_text(path)), out;
  std::string line;
  while (std::getline(in, line)) {
    std::stringstream ls(line);
    std::string cell;
    for (int c = 0; c < 7 && std::getline(ls, cell, ','); ++c) out << cell << ",";
    out << "\n";
  }
  return out.str();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Hardening, MidEpochInterruptResumesTheMetricsExactly) {
  TempDir a, b;
  train::Config c = tiny_config(a.path);
  c.n_epoch = 2;
  c.eval_every = 0;
  c.prefetch = false;
  {
    train::Trainer t(c, true);
    ASSERT_TRUE(t.fit());
  }
  c.out_dir = b.path;
  {
    train::Trainer t(c, true);
    train::interrupt_flag() = true;  // stops after the first batch of epoch 1
    EXPECT_FALSE(t.fit());
    train::interrupt_flag() = false;
  }
  // A row the checkpoint does not know of (a checkpoint write that failed
  // after the metrics were written) is dropped on resume, not duplicated.
  append_file(b.path + "/run/metrics.csv", "1,train,majority,9,accuracy,9,0,0,0,0\n");
  append_file(b.path + "/run/metrics.jsonl", "{\"epoch\": 1, \"lr\": 0}\n");
  {
    auto r = train::Trainer::resume(b.path + "/run", true);
    EXPECT_EQ(read_text(b.path + "/run/metrics.csv").find("1,train,majority,9"), std::string::npos);
    ASSERT_TRUE(r->fit());
  }
  EXPECT_EQ(metric_columns(b.path + "/run/metrics.csv"), metric_columns(a.path + "/run/metrics.csv"));
  const std::string ja = read_text(a.path + "/run/metrics.jsonl"), jb = read_text(b.path + "/run/metrics.jsonl");
  EXPECT_EQ(std::count(jb.begin(), jb.end(), '\n'), std::count(ja.begin(), ja.end(), '\n'));
}

TEST(Hardening, NonFiniteLossStopsNamingTheStepAndCheckpoint) {
  TempDir o;
  train::Config c = tiny_config(o.path);
  c.lr = 1e38;
  c.n_epoch = 2;
  c.eval_every = 0;
  train::Trainer t(c, true);
  const std::string e = error_of([&] { t.fit(); });
  EXPECT_NE(e.find("the training loss is"), std::string::npos) << e;
  EXPECT_NE(e.find("at step"), std::string::npos) << e;
  EXPECT_NE(e.find("the last good checkpoint is '" + o.path + "/run/checkpoint_last.safetensors'"),
            std::string::npos)
      << e;
}

TEST(Hardening, ConfigValuesAreChecked) {
  auto cfg_error = [](const std::string& yaml) {
    return error_of([&] { train::validate(train::parse_config(yaml, "c.yaml")); });
  };
  EXPECT_NE(cfg_error("B: 1e30\n").find("1e30 is out of the integer range"), std::string::npos);
  EXPECT_NE(cfg_error("lr: .inf\n").find("'lr': expected a finite number"), std::string::npos);
  EXPECT_NE(cfg_error("w_div: .nan\n").find("'w_div': expected a finite number"), std::string::npos);
  EXPECT_NE(cfg_error("tasks: []\n").find("'tasks' is empty"), std::string::npos);
  EXPECT_NE(cfg_error("D: 100000000\n").find("needs an estimated"), std::string::npos);
  EXPECT_NE(cfg_error("n_class: 100000000000\n").find("needs an estimated"), std::string::npos);
  EXPECT_NE(cfg_error("threads: 3000000000\n").find("'threads': expected 0..1024"), std::string::npos);
  EXPECT_EQ(cfg_error("B: 1e3\nB_seq: 8\n"), "(no error)");
  TempDir d;
  EXPECT_NE(error_of([&] { train::load_config(d.path); }).find("is a directory"), std::string::npos);
  // Every estimate of a default config fits a laptop.
  EXPECT_LT(train::estimate_memory_bytes(train::parse_config("", "defaults")), 4.0 * (1 << 30));
}

TEST(Hardening, YamlIsWrittenByAnEmitter) {
  train::Config c = train::parse_config("", "defaults");
  c.run_name = "a\"b: c\\d\n#e";
  c.data_dir = "/x/{y}/[z]";
  const std::string y = train::to_yaml(c);
  train::Config d = train::parse_config(y, "saved");
  EXPECT_EQ(d.run_name, c.run_name);
  EXPECT_EQ(d.data_dir, c.data_dir);
  EXPECT_EQ(train::to_yaml(d), y);
}

TEST(Hardening, RunDirectoryIsLockedAndDefaultNamesAreUnique) {
  TempDir o;
  train::Config c = tiny_config(o.path);
  c.run_name = "";
  c.n_epoch = 1;
  c.eval_every = 0;
  std::string dir;
  {
    train::Trainer first(c, true), second(c, true);  // started in the same second: NAME-2
    EXPECT_NE(first.run_dir(), second.run_dir());
    dir = first.run_dir();
    EXPECT_TRUE(first.fit());
    // While a trainer runs in it, the run directory is locked.
    const std::string e = error_of([&] { train::Trainer::resume(dir, true); });
    EXPECT_NE(e.find("is in use by another ipsnet process"), std::string::npos) << e;
  }
  {
    PathLock held(dir, "run directory");
    const std::string e = error_of([&] { train::Trainer::resume(dir, true); });
    EXPECT_NE(e.find("is in use by another ipsnet process"), std::string::npos) << e;
  }
  EXPECT_NO_THROW(train::Trainer::resume(dir, true));
  const std::string e = error_of([&] { train::Trainer::resume(dir, true, {"lr=0.1"}); });
  EXPECT_NE(e.find("'lr' cannot change"), std::string::npos) << e;
}

}  // namespace
}  // namespace ipsnet
