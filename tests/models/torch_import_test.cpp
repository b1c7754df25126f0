// Weights that come from PyTorch (issue 11, item 2): the loader accepts state
// dicts without BatchNorm's num_batches_tracked (and nothing else missing);
// `ipsnet eval --config` / `attention-maps --config` run a checkpoint that has
// no ipsnet config; on official-IPS-structured random weights converted by
// scripts/import_torch_weights.py they select the patches PyTorch selects and
// give its probabilities. Fixtures: tests/fixtures/torch_import/ (written by
// tests/fixtures/make_torch_import.py); the conversion itself is re-run by
// tests/models/torch_import_test.py when python3-torch is installed.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "layers/batchnorm.h"
#include "layers/sequential.h"
#include "models/ips_net.h"
#include "models/safetensors.h"

namespace ipsnet {
namespace {

namespace fs = std::filesystem;

const std::string kBin = IPSNET_BINARY;
const std::string kFix = std::string(IPSNET_FIXTURES_DIR) + "/torch_import";

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ipsnet_torch_import_XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// Runs a shell command; returns its exit status, stdout+stderr in *out.
int run(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, n);
  int rc = ::pclose(p);
  if (out) *out = text;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, sep)) out.push_back(tok);
  return out;
}

// ---- loader ----------------------------------------------------------------------------

TEST(TorchImportLoader, MissingBatchNormCounterIsZeroEverythingElseStillAnError) {
  Sequential m;
  m.push_back(std::make_shared<BatchNorm2d>(BatchNormOptions(4)));
  m.push_back(std::make_shared<BatchNorm2d>(BatchNormOptions(4)));
  TensorDict full = m.state_dict();
  {
    NoGradGuard ng;
    m.named_buffers().at("0.num_batches_tracked").fill_(5.0);
  }
  TensorDict no_counters;
  for (const auto& it : full)
    if (it.first.find("num_batches_tracked") == std::string::npos) no_counters.insert(it.first, it.second);
  LoadResult r = m.load_state_dict(no_counters, true);  // strict: accepted
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_EQ(r.defaulted_keys, (std::vector<std::string>{"0.num_batches_tracked", "1.num_batches_tracked"}));
  EXPECT_EQ(m.named_buffers().at("0.num_batches_tracked").item(), 0.0);

  // Any other absent name is still an error, named.
  TensorDict no_mean;
  for (const auto& it : no_counters)
    if (it.first != "1.running_mean") no_mean.insert(it.first, it.second);
  try {
    m.load_state_dict(no_mean, true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("missing keys (1)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1.running_mean"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("num_batches_tracked"), std::string::npos) << msg;
  }
  // So is an unexpected one, also one that looks like a counter.
  TensorDict extra = no_counters;
  extra.insert("2.num_batches_tracked", Tensor::zeros({}, DType::Int64));
  EXPECT_THROW(m.load_state_dict(extra, true), Error);
}

TEST(TorchImportLoader, IPSNetWithoutCountersLoadsStrictly) {
  Generator gen(4);
  std::vector<TaskSpec> tasks{{"t", 3, TaskActivation::Softmax}};
  auto opts = IPSNetOptions().n_res_blocks(2).transformer(AggregatorOptions().n_token(1).D(128).D_k(8).D_v(8).D_inner(16)).tasks(tasks);
  IPSNet a(opts, gen), b(opts, gen);
  TensorDict sd;
  int counters = 0;
  for (const auto& it : a.state_dict()) {
    if (it.first.size() > 20 && it.first.compare(it.first.size() - 20, 20, ".num_batches_tracked") == 0)
      ++counters;
    else
      sd.insert(it.first, it.second);
  }
  LoadResult r = b.load_state_dict(sd, true);
  EXPECT_EQ(static_cast<int>(r.defaulted_keys.size()), counters);
  EXPECT_GT(counters, 0);
  EXPECT_EQ(b.state_dict().at("encoder.layer2.1.bn2.running_var").to_vector<float>(),
            a.state_dict().at("encoder.layer2.1.bn2.running_var").to_vector<float>());
}

// ---- the CLI on converted PyTorch weights ----------------------------------------------

struct Fixture {
  TempDir dir;
  std::string data;
  Fixture() {
    data = dir / "data";
    std::string out;
    // A directory that holds only the test split (the reference's test.npy alone).
    int rc = run(kBin + " import-npy --flat " + kFix + "/data_flat " + data, &out);
    EXPECT_EQ(rc, 0) << out;
  }
};

struct Predictions {
  std::vector<std::vector<int64_t>> selected;                  // per image, sorted
  std::map<std::string, std::vector<std::vector<double>>> probs;  // task -> image -> class
  int max_digits = 0;                                          // significant digits of the longest probability
};

Predictions read_csv(const std::string& path) {
  Predictions p;
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  std::string line;
  std::getline(f, line);
  std::vector<std::string> head = split(line, ',');
  while (std::getline(f, line)) {
    std::vector<std::string> cells = split(line, ',');
    EXPECT_EQ(cells.size(), head.size()) << line;
    for (size_t c = 0; c < head.size() && c < cells.size(); ++c) {
      const std::string& h = head[c];
      size_t pp = h.rfind("_p");
      if (h == "selected_patches") {
        std::vector<int64_t> s;
        for (const std::string& t : split(cells[c], ' ')) s.push_back(std::stoll(t));
        std::sort(s.begin(), s.end());
        p.selected.push_back(s);
      } else if (pp != std::string::npos && h.find("_pred") == std::string::npos) {
        std::string task = h.substr(0, pp);
        size_t k = static_cast<size_t>(std::stoi(h.substr(pp + 2)));
        auto& rows = p.probs[task];
        const size_t img = p.selected.size();  // selected_patches is the last column
        if (rows.size() <= img) rows.resize(img + 1);
        if (rows[img].size() <= k) rows[img].resize(k + 1);
        rows[img][k] = std::stod(cells[c]);
        std::string digits;
        for (char ch : cells[c])
          if (std::isdigit(static_cast<unsigned char>(ch))) digits += ch;
        digits.erase(0, digits.find_first_not_of('0'));
        p.max_digits = std::max(p.max_digits, static_cast<int>(digits.size()));
      }
    }
  }
  return p;
}

// Compares with PyTorch's float64 reference; returns the max |ipsnet - torch| of the probabilities.
double compare_with_torch(const Predictions& got, const std::string& what) {
  YAML::Node e = YAML::LoadFile(kFix + "/expected.json");
  const int64_t n = e["n_images"].as<int64_t>();
  EXPECT_EQ(static_cast<int64_t>(got.selected.size()), n) << what;
  for (int64_t i = 0; i < n && i < static_cast<int64_t>(got.selected.size()); ++i) {
    std::vector<int64_t> want = e["selected"][i].as<std::vector<int64_t>>();
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got.selected[i], want) << what << ": image " << i << " selects other patches than PyTorch";
  }
  double worst = 0;
  std::string worst_at;
  for (const auto& task : e["probs"]) {
    const std::string name = task.first.as<std::string>();
    auto it = got.probs.find(name);
    EXPECT_NE(it, got.probs.end()) << what << ": no probabilities of task " << name;
    if (it == got.probs.end()) continue;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> want = task.second[i].as<std::vector<double>>();
      EXPECT_EQ(it->second[i].size(), want.size());
      for (size_t k = 0; k < want.size() && k < it->second[i].size(); ++k) {
        double d = std::abs(it->second[i][k] - want[k]);
        if (d > worst) {
          worst = d;
          worst_at = name + " image " + std::to_string(i) + " class " + std::to_string(k);
        }
      }
    }
  }
  EXPECT_LT(worst, 1e-5) << what << ": worst at " << worst_at;
  std::printf("%s: same selected patches as PyTorch for %lld images; max |p - p_torch| = %.3g (%s)\n", what.c_str(),
              static_cast<long long>(n), worst, worst_at.c_str());
  return worst;
}

TEST(TorchImport, EvalWithConfigMatchesPyTorch) {
  Fixture fx;
  // The converted checkpoint has no ipsnet metadata and no num_batches_tracked.
  safetensors::File f = safetensors::load(kFix + "/model.safetensors");
  EXPECT_EQ(f.metadata.count("config"), 0u);
  EXPECT_TRUE(f.tensors.contains("encoder.layer1.0.conv1.weight"));
  for (const auto& it : f.tensors) EXPECT_EQ(it.first.find("num_batches_tracked"), std::string::npos) << it.first;

  for (const char* mode : {"lazy", "eager"}) {
    std::string csv = fx.dir / (std::string(mode) + ".csv"), out;
    int rc = run(kBin + " eval --quiet --checkpoint " + kFix + "/model.safetensors --config " + kFix +
                     "/config.yaml --data " + fx.data + " --predictions " + csv +
                     (std::string(mode) == "eager" ? " --set eager=true" : ""),
                 &out);
    ASSERT_EQ(rc, 0) << out;
    Predictions p = read_csv(csv);
    compare_with_torch(p, std::string("eval --config (") + mode + ")");
    EXPECT_GE(p.max_digits, 9) << "predictions CSV: probabilities need 9 significant digits";
  }
}

TEST(TorchImport, AttentionMapsWithConfig) {
  Fixture fx;
  std::string out;
  int rc = run(kBin + " attention-maps --checkpoint " + kFix + "/model.safetensors --config " + kFix +
                   "/config.yaml --data " + fx.data + " --images 0,3 --out " + (fx.dir / "maps"),
               &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(fs::exists(fx.dir / "maps/test_0.png"));
  EXPECT_TRUE(fs::exists(fx.dir / "maps/test_3.png"));
  // Without --config there is nothing to build the model from: one clear line that says what to do.
  rc = run(kBin + " attention-maps --checkpoint " + kFix + "/model.safetensors --data " + fx.data +
               " --out " + (fx.dir / "maps2"),
           &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--config"), std::string::npos) << out;
}

TEST(TorchImport, ConfigIsCheckedAgainstTheTensors) {
  Fixture fx;
  const std::string ckpt = kFix + "/model.safetensors";
  std::string out;
  int rc = run(kBin + " eval --quiet --checkpoint " + ckpt + " --data " + fx.data, &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("no ipsnet config"), std::string::npos) << out;
  EXPECT_NE(out.find("--config FILE"), std::string::npos) << out;

  // A config whose architecture differs: the message names the tensor and both shapes.
  std::ifstream in(kFix + "/config.yaml");
  std::stringstream ss;
  ss << in.rdbuf();
  auto variant = [&](const std::string& from, const std::string& to) {
    std::string text = ss.str();
    size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::string path = fx.dir / ("cfg" + std::to_string(std::hash<std::string>()(to)) + ".yaml");
    std::ofstream(path) << text;
    return path;
  };
  rc = run(kBin + " eval --quiet --checkpoint " + ckpt + " --data " + fx.data + " --config " +
               variant("D_inner: 512", "D_inner: 256"),
           &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("transf.mlp.w_1.weight: checkpoint (512, 128) vs model (256, 128)"), std::string::npos) << out;
  EXPECT_NE(out.find("does not match the tensors"), std::string::npos) << out;
  rc = run(kBin + " eval --quiet --checkpoint " + ckpt + " --data " + fx.data + " --config " +
               variant("n_res_blocks: 2", "n_res_blocks: 4"),
           &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("encoder.layer3.0.conv1.weight"), std::string::npos) << out;

  // Missing (other than the counters) or unexpected tensors stay errors, by name.
  safetensors::File f = safetensors::load(ckpt);
  TensorDict missing, extra = f.tensors;
  for (const auto& it : f.tensors)
    if (it.first != "transf.crs_attn.q") missing.insert(it.first, it.second);
  extra.insert("transf.extra.weight", Tensor::zeros({2}));
  safetensors::save(fx.dir / "missing.safetensors", missing);
  safetensors::save(fx.dir / "extra.safetensors", extra);
  rc = run(kBin + " eval --quiet --checkpoint " + (fx.dir / "missing.safetensors") + " --config " + kFix +
               "/config.yaml --data " + fx.data,
           &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("missing keys (1)"), std::string::npos) << out;
  EXPECT_NE(out.find("transf.crs_attn.q"), std::string::npos) << out;
  rc = run(kBin + " eval --quiet --checkpoint " + (fx.dir / "extra.safetensors") + " --config " + kFix +
               "/config.yaml --data " + fx.data,
           &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("unexpected keys (1)"), std::string::npos) << out;
  EXPECT_NE(out.find("transf.extra.weight"), std::string::npos) << out;
}

TEST(TorchImport, EvalOpensOnlyTheSplitItEvaluates) {
  Fixture fx;  // the dataset has no train split at all
  std::string out;
  int rc = run(kBin + " eval --quiet --checkpoint " + kFix + "/model.safetensors --config " + kFix +
                   "/config.yaml --data " + fx.data + " --split train",
               &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("train"), std::string::npos) << out;
  rc = run(kBin + " eval --quiet --checkpoint " + kFix + "/model.safetensors --config " + kFix + "/config.yaml --data " +
               fx.data + " --max-images 1",
           &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("split test, 1 images"), std::string::npos) << out;
}

}  // namespace
}  // namespace ipsnet
