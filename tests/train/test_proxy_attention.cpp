// Issue 16: Proxy Attention -- the config section and its one-line errors,
// the pixel rule, a proxy step's stored split (images, origins, sheet) and
// the training set it makes (augment, replace), training cycles end to end
// with IPS and the CNN, and exact resume across a proxy step.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/source.h"
#include "tests/data/data_test_util.h"
#include "tests/train/tiny_data.h"
#include "train/config.h"
#include "train/methods/ips.h"
#include "train/proxy_attention.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

namespace fs = std::filesystem;
using testing_data::TempDir;
using testing_train::tiny;
using testing_train::tiny_config;

std::string config_error(const std::string& yaml) {
  try {
    train::validate(train::parse_config(yaml, "cfg.yaml"));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ProxyAttention, ConfigSectionParsesAndRoundTrips) {
  train::Config c = train::parse_config(
      "proxy_attention:\n  schedule: [2, p, 1, \"p\", 3]\n  select: highest_loss\n  count: 3\n  replace: mean\n"
      "  mode: replace\n  clear_every_step: true\n  explain: gradcam\n",
      "cfg.yaml");
  train::validate(c);
  EXPECT_TRUE(c.proxy.enabled);
  EXPECT_EQ(c.n_epoch, 6);  // from the schedule, n_epoch not given
  EXPECT_EQ(c.proxy.step_epochs(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c.proxy.count, 3);
  EXPECT_EQ(c.proxy.replace, "mean");
  EXPECT_EQ(c.proxy.threshold, 0.85);  // the later code's defaults
  EXPECT_EQ(c.proxy.weight, 0.1);
  EXPECT_EQ(c.proxy.fraction, 0.2);
  // The saved config (run directory, checkpoints) reads back the same.
  train::Config r = train::parse_config(train::to_yaml(c), "saved");
  EXPECT_EQ(r.proxy.schedule, c.proxy.schedule);
  EXPECT_EQ(r.proxy.select, "highest_loss");
  EXPECT_EQ(r.proxy.mode, "replace");
  EXPECT_TRUE(r.proxy.clear_every_step);
  EXPECT_EQ(r.proxy.explain, "gradcam");
  EXPECT_EQ(r.n_epoch, 6);
  EXPECT_EQ(train::to_yaml(r), train::to_yaml(c));
  // --set of one key keeps the others.
  train::apply_override(r, "proxy_attention.threshold=0.5");
  EXPECT_EQ(r.proxy.threshold, 0.5);
  EXPECT_EQ(r.proxy.count, 3);
  // Without the section: off, and the saved config has none.
  train::Config off = train::parse_config("n_epoch: 3\n", "x");
  EXPECT_FALSE(off.proxy.enabled);
  EXPECT_EQ(train::to_yaml(off).find("proxy_attention"), std::string::npos);
}

TEST(ProxyAttention, BadConfigIsOneClearLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"proxy_attention: {schedule: [2, p, 1], threshold: 1.5}\n", "'proxy_attention.threshold': expected in [0, 1]"},
      {"proxy_attention: {schedule: [2, p, 1], threshold: -0.1}\n", "'proxy_attention.threshold': expected in [0, 1]"},
      {"proxy_attention: {schedule: [3]}\n", "zero proxy steps"},
      {"proxy_attention: {schedule: [p, 3]}\n", "starts with a proxy step"},
      {"proxy_attention: {schedule: [3, p]}\n", "ends with a proxy step"},
      {"n_epoch: 5\nproxy_attention: {schedule: [2, p, 1]}\n", "trains 3 epochs but n_epoch is 5"},
      {"proxy_attention: {schedule: [2, q, 1]}\n", "entry 2 is q"},
      {"proxy_attention: {schedule: [2, p, 1], treshold: 0.5}\n", "did you mean 'threshold'"},
      {"proxy_attention: {schedule: [2, p, 1], replace: blue}\n", "blended, zero, mean, max or min"},
      {"proxy_attention: {schedule: [2, p, 1], mode: both}\n", "augment or replace"},
      {"proxy_attention: {schedule: [2, p, 1], fraction: 0}\n", "'proxy_attention.fraction': expected in (0, 1]"},
      {"proxy_attention: {schedule: [2, p, 1], explain: lime}\n", "auto, gradcam_pp, gradcam, cam or attention"},
      {"proxy_attention: {schedule: [2, p, 1], task: nope}\n", "'nope' is not one of the config's tasks"},
      {"proxy_attention: [2, p, 1]\n", "expected a section of keys"},
  };
  for (const auto& [yaml, want] : cases) {
    const std::string m = config_error(yaml);
    EXPECT_NE(m.find(want), std::string::npos) << yaml << " -> " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(ProxyAttention, PixelRule) {
  // One channel 2x2 image and a map: tau 0.85 changes the pixels whose map exceeds it.
  const std::vector<float> img = {1.0f, 2.0f, 3.0f, 4.0f}, map = {0.9f, 0.5f, 1.0f, 0.85f};
  train::ProxyAttentionConfig p;
  auto run = [&](const std::string& replace) {
    p.replace = replace;
    std::vector<float> x = img;
    const double frac = train::apply_proxy_rule(x.data(), 1, 2, 2, map.data(), p);
    EXPECT_DOUBLE_EQ(frac, 0.5);
    return x;
  };
  std::vector<float> b = run("blended");  // (1 - 0.1 M) x where M > 0.85
  EXPECT_FLOAT_EQ(b[0], (1.0f - 0.1f * 0.9f) * 1.0f);
  EXPECT_FLOAT_EQ(b[1], 2.0f);
  EXPECT_FLOAT_EQ(b[2], (1.0f - 0.1f * 1.0f) * 3.0f);
  EXPECT_FLOAT_EQ(b[3], 4.0f);  // M == tau is not above it
  EXPECT_EQ(run("zero"), (std::vector<float>{0.0f, 2.0f, 0.0f, 4.0f}));
  EXPECT_EQ(run("mean"), (std::vector<float>{2.5f, 2.0f, 2.5f, 4.0f}));
  EXPECT_EQ(run("max"), (std::vector<float>{4.0f, 2.0f, 4.0f, 4.0f}));
  EXPECT_EQ(run("min"), (std::vector<float>{1.0f, 2.0f, 1.0f, 4.0f}));
  // Every channel of a pixel changes together.
  p.replace = "zero";
  std::vector<float> rgb = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
  train::apply_proxy_rule(rgb.data(), 3, 2, 2, map.data(), p);
  EXPECT_EQ(rgb, (std::vector<float>{0, 1, 0, 1, 0, 2, 0, 2, 0, 3, 0, 3}));
}

// IPS with a known explanation map (a ramp over the image), to test the
// step's bookkeeping independently of the explanation methods.
class RampMethod : public train::IPSMethod {
 public:
  using IPSMethod::IPSMethod;
  std::vector<std::string> explanations() const override { return {"ramp"}; }
  Tensor explain(train::Batch& batch, const std::string&, const std::string&, const std::vector<int64_t>&,
                 Generator&) override {
    const PatchGrid g = batch.source().grid(batch.ids()[0]);
    std::vector<float> m(static_cast<size_t>(batch.size() * g.height * g.width));
    for (int64_t b = 0; b < batch.size(); ++b)
      for (int64_t y = 0; y < g.height; ++y)
        for (int64_t x = 0; x < g.width; ++x)
          m[static_cast<size_t>((b * g.height + y) * g.width + x)] =
              static_cast<float>(x + y) / static_cast<float>(g.height + g.width - 2);
    return Tensor::from_vector(m, {batch.size(), g.height, g.width});
  }
};

TEST(ProxyAttention, StepWritesItsSplitAndTheSetUsesIt) {
  TempDir out;
  train::Config cfg = tiny_config(out.path);
  cfg.proxy.enabled = true;
  cfg.proxy.schedule = {1, train::ProxyAttentionConfig::kProxyStep, 1};
  cfg.proxy.select = "highest_loss";
  cfg.proxy.count = 5;
  cfg.proxy.threshold = 0.5;
  cfg.proxy.replace = "zero";
  data::SourceOptions so;
  so.patch_size = cfg.patch_size;
  so.patch_stride = cfg.patch_stride;
  std::unique_ptr<data::DataSource> src = data::open_source(cfg.data_dir, "train", so);
  Generator init(3);
  train::MethodContext ctx{cfg, *src, Device::cpu(), init, nullptr};
  RampMethod method(ctx);
  const int64_t n = src->size();
  train::ProxyStepResult r =
      train::run_proxy_step(method, *src, n, cfg, "ramp", Device::cpu(), 1, 1, out.path, 11, /*quiet=*/true);
  EXPECT_EQ(r.candidates, n);  // highest_loss: every image is a candidate
  EXPECT_EQ(r.changed, 5);
  const std::string dir = train::proxy_cycle_dir(out.path, 1);
  EXPECT_EQ(r.dir, dir);
  EXPECT_TRUE(fs::exists(dir + "/images.npy") && fs::exists(dir + "/origin.csv") && fs::exists(dir + "/sheet.png"));
  for (const auto& e : fs::directory_iterator(fs::path(out.path) / "proxy"))  // no temporary left
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  auto store = std::make_shared<const train::ProxyStore>(dir);
  ASSERT_EQ(store->size(), 5);
  const PatchGrid g = src->grid(0);
  std::vector<int64_t> origins;
  for (int64_t k = 0; k < 5; ++k) {
    origins.push_back(store->origin(k));
    // The proxy is its origin with the pixels where the ramp exceeds 0.5 set to zero.
    std::vector<float> orig(static_cast<size_t>(g.height * g.width)), prox(orig.size());
    src->read_image(store->origin(k), orig.data());
    store->read(k, prox.data());
    for (int64_t y = 0; y < g.height; ++y)
      for (int64_t x = 0; x < g.width; ++x) {
        const size_t q = static_cast<size_t>(y * g.width + x);
        const bool masked = static_cast<float>(x + y) / static_cast<float>(g.height + g.width - 2) > 0.5f;
        ASSERT_EQ(prox[q], masked ? 0.0f : orig[q]) << k << " " << y << " " << x;
      }
  }
  EXPECT_TRUE(std::is_sorted(origins.begin(), origins.end()));

  // augment: the originals, then the proxies with their origins' labels and patches cut from them.
  train::ProxyTrainSource aug(*src, n, "augment");
  aug.set_stores({store});
  ASSERT_EQ(aug.size(), n + 5);
  EXPECT_EQ(aug.proxies(), 5);
  for (int64_t k = 0; k < 5; ++k) {
    const int64_t i = n + k, o = store->origin(k);
    for (const data::LabelSpec& l : src->labels()) EXPECT_EQ(aug.classes(i, l.name), src->classes(o, l.name));
    std::vector<float> img(static_cast<size_t>(g.height * g.width)), patches(static_cast<size_t>(2 * 28 * 28));
    aug.read_image(i, img.data());
    const int64_t idx[2] = {0, g.count() - 1};
    aug.read_instances(i, idx, 2, patches.data());
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t y = 0; y < 28; ++y)
        for (int64_t x = 0; x < 28; ++x)
          ASSERT_EQ(patches[static_cast<size_t>((j * 28 + y) * 28 + x)],
                    img[static_cast<size_t>(g.source_offset(idx[j], 0, y, x))]);
  }
  // replace: same size, each proxy in its origin's place.
  train::ProxyTrainSource rep(*src, n, "replace");
  rep.set_stores({store});
  ASSERT_EQ(rep.size(), n);
  std::vector<float> a(static_cast<size_t>(g.height * g.width)), b(a.size());
  rep.read_image(store->origin(0), a.data());
  store->read(0, b.data());
  EXPECT_EQ(a, b);
  // A store of other data is refused in one line.
  TempDir other;
  fs::create_directories(other.path + "/c");
  fs::copy_file(dir + "/origin.csv", other.path + "/c/origin.csv");
  { std::ofstream(other.path + "/c/images.npy") << "not an npy"; }
  try {
    train::ProxyStore bad(other.path + "/c");
    FAIL() << "a corrupt images.npy was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("images.npy"), std::string::npos) << e.what();
  }
}

// The parameters of a trained model, by name.
std::map<std::string, std::vector<float>> params_of(train::Trainer& t) {
  std::map<std::string, std::vector<float>> m;
  for (const auto& it : t.model().named_parameters()) m[it.first] = it.second.contiguous().to_vector<float>();
  return m;
}

// metrics.csv without its timing and peak-memory columns (seconds, images/s and
// the peak of an epoch resumed in the middle differ between runs).
std::string metrics_without_times(const std::string& path) {
  std::ifstream f(path);
  std::string line, out;
  while (std::getline(f, line)) {
    std::vector<std::string> cols;
    std::stringstream ss(line);
    std::string c;
    while (std::getline(ss, c, ',')) cols.push_back(c);
    for (size_t i = 0; i < cols.size(); ++i)
      if (i != 7 && i != 8 && i != 9) out += cols[i] + ",";
    out += "\n";
  }
  return out;
}

train::Config proxy_config(const std::string& out, const std::string& method) {
  train::Config c = tiny_config(out);
  c.method = method;
  c.n_epoch = 2;
  c.max_train = 16;  // two steps per epoch
  c.max_test = 8;
  c.proxy.enabled = true;
  c.proxy.schedule = {1, train::ProxyAttentionConfig::kProxyStep, 1};
  c.proxy.select = "highest_loss";
  c.proxy.count = 4;
  return c;
}

TEST(ProxyAttention, IpsCyclesResumeExactlyAcrossTheProxyStep) {
  TempDir out_a, out_b;
  train::Config cfg = proxy_config(out_a.path, "ips");
  std::map<std::string, std::vector<float>> pa;
  {
    train::Trainer a(cfg, true);
    ASSERT_TRUE(a.fit());
    EXPECT_EQ(a.proxy_steps_done(), 1);
    EXPECT_EQ(a.train_data().size(), 16 + 4);
    pa = params_of(a);
  }
  const std::string run_a = out_a.path + "/run";
  EXPECT_TRUE(fs::exists(train::proxy_cycle_dir(run_a, 1) + "/images.npy"));
  EXPECT_TRUE(fs::exists(train::proxy_cycle_dir(run_a, 1) + "/sheet.png"));
  {
    std::ifstream f(run_a + "/metrics.jsonl");
    std::stringstream ss;
    ss << f.rdbuf();
    EXPECT_NE(ss.str().find("\"proxy_step\": 1"), std::string::npos) << ss.str();
    EXPECT_NE(ss.str().find("\"explain\": \"attention\""), std::string::npos);
    EXPECT_NE(ss.str().find("\"proxy_cycle\": 1, \"train_images\": 20"), std::string::npos);
  }
  // The same run stopped at the end of epoch 1 (before the proxy step), and
  // again one step after it, each time resumed: the same final model.
  cfg.out_dir = out_b.path;
  {
    train::Trainer b(cfg, true);
    b.stop_after(2);  // 16 images, B 8: the whole first epoch
    EXPECT_FALSE(b.fit());
  }
  const std::string run_b = out_b.path + "/run";
  {
    auto r = train::Trainer::resume(run_b, true);
    EXPECT_EQ(r->proxy_steps_done(), 0);
    r->stop_after(1);
    EXPECT_FALSE(r->fit());
    EXPECT_EQ(r->proxy_steps_done(), 1);
  }
  {
    auto r = train::Trainer::resume(run_b, true);
    EXPECT_EQ(r->proxy_steps_done(), 1);
    EXPECT_EQ(r->train_data().size(), 20);
    ASSERT_TRUE(r->fit());
    std::map<std::string, std::vector<float>> pb = params_of(*r);
    for (const auto& [name, v] : pa) EXPECT_EQ(v, pb.at(name)) << name;
  }
  EXPECT_EQ(metrics_without_times(run_a + "/metrics.csv"), metrics_without_times(run_b + "/metrics.csv"));
  // A run directory whose proxy images are gone cannot resume silently without them.
  fs::remove_all(train::proxy_cycle_dir(run_b, 1));
  try {
    train::Trainer::resume(run_b, true);
    FAIL() << "resumed without its proxy images";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cycle_1"), std::string::npos) << e.what();
  }
}

TEST(ProxyAttention, CnnGradCamPlusPlusReplacesImages) {
  TempDir out;
  train::Config cfg = proxy_config(out.path, "cnn");
  cfg.proxy.mode = "replace";
  cfg.proxy.select = "misclassified";
  cfg.proxy.count = 0;
  cfg.proxy.fraction = 0.5;
  train::Trainer t(cfg, true);
  ASSERT_TRUE(t.fit());
  EXPECT_EQ(t.train_data().size(), 16);  // replaced, not added
  std::ifstream f(out.path + "/run/metrics.jsonl");
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_NE(ss.str().find("\"explain\": \"gradcam_pp\""), std::string::npos) << ss.str();
}

TEST(ProxyAttention, BadRunsAreOneClearLine) {
  auto error_of = [](const train::Config& c) {
    try {
      train::Trainer t(c, true);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  TempDir out;
  train::Config c = proxy_config(out.path, "first_m");
  EXPECT_NE(error_of(c).find("method 'first_m' has no explanation map"), std::string::npos) << error_of(c);
  c = proxy_config(out.path, "ips");
  c.run_name = "r2";
  c.proxy.count = 100;
  EXPECT_NE(error_of(c).find("100 worst examples requested, but the training set has only 16 images"),
            std::string::npos)
      << error_of(c);
  c = proxy_config(out.path, "ips");
  c.run_name = "r3";
  c.proxy.explain = "gradcam";
  EXPECT_NE(error_of(c).find("method 'ips' has no 'gradcam' map (it has: attention)"), std::string::npos)
      << error_of(c);
}

}  // namespace
}  // namespace ipsnet
