// Issue 6 behaviour: a tiny end-to-end run, exact resume, determinism,
// selection invariants, loading-mode agreement, config error paths.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "data/megapixel_mnist.h"
#include "models/ips_selection.h"
#include "tests/data/data_test_util.h"
#include "tests/train/tiny_data.h"
#include "train/batch.h"
#include "train/config.h"
#include "train/metrics.h"
#include "train/methods/ips.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {


using testing_data::TempDir;
using testing_train::ips_net;
using testing_train::tiny;
using testing_train::tiny_config;

TEST(Train, TinyRunLossFalls) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  c.n_epoch = 3;
  c.lr = 2e-3;
  train::Trainer t(c, true);
  double before = t.evaluate("train").loss;
  ASSERT_TRUE(t.fit());
  double after = t.evaluate("train").loss;
  EXPECT_EQ(t.history().size(), 3u);
  EXPECT_EQ(t.history().back().first.images, 32);  // train metrics from the training passes
  EXPECT_LT(after, before) << "train loss did not fall: " << before << " -> " << after;
  // Run directory contents.
  for (const char* f : {"config.yaml", "metrics.csv", "metrics.jsonl", "train.log", "checkpoint_last.safetensors",
                        "checkpoint_best.safetensors"})
    EXPECT_TRUE(std::filesystem::exists(t.run_dir() + "/" + f)) << f;
  std::ifstream csv(t.run_dir() + "/metrics.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_NE(header.find("peak_allocated_mib"), std::string::npos);
  // `ipsnet eval --set` overrides the checkpoint's config; a wrong key is one line.
  const std::string eval = std::string(IPSNET_BINARY) + " eval --quiet --checkpoint " + t.run_dir() +
                           "/checkpoint_best.safetensors --set ";
  std::string text;
  EXPECT_EQ(testing_data::run_capture(eval + "dedup_patchs=false", &text), 2);
  EXPECT_NE(text.find("did you mean 'dedup_patches'"), std::string::npos) << text;
  EXPECT_EQ(testing_data::run_capture(eval + "'dedup_patches=false;fold_bn=true'", &text), 0) << text;
  EXPECT_NE(text.find("mean metric"), std::string::npos) << text;
  const bool bf16 = backend_for(Device::cpu()).supports_bf16_conv();
  EXPECT_EQ(testing_data::run_capture(eval + "selection_bf16=true", &text), bf16 ? 0 : 2) << text;
  if (!bf16) {
    EXPECT_NE(text.find("AVX512-BF16"), std::string::npos) << text;
  }
}

TEST(Train, ResumeGivesTheSameNextStepLoss) {
  TempDir out_a, out_b;
  // Uninterrupted: two steps.
  train::Trainer a(tiny_config(out_a.path), true);
  std::vector<int64_t> order = a.epoch_order(0);
  std::vector<int64_t> b0(order.begin(), order.begin() + 8), b1(order.begin() + 8, order.begin() + 16);
  a.train_step(b0);
  double loss_a = a.train_step(b1);
  // Interrupted after one step, then resumed from the checkpoint.
  {
    train::Trainer b(tiny_config(out_b.path), true);
    train::interrupt_flag() = true;
    EXPECT_FALSE(b.fit());
    train::interrupt_flag() = false;
    EXPECT_EQ(b.global_step(), 1);
  }
  auto r = train::Trainer::resume(out_b.path + "/run", true);
  EXPECT_EQ(r->global_step(), 1);
  double loss_r = r->train_step(b1);
  EXPECT_NEAR(loss_r, loss_a, 1e-6);
}

TEST(Train, SameSeedSameMetrics) {
  TempDir o1, o2;
  train::Config c = tiny_config(o1.path);
  c.n_epoch = 1;
  c.dropout = 0.1;
  c.attn_dropout = 0.1;
  train::Trainer a(c, true);
  a.fit();
  c.out_dir = o2.path;
  train::Trainer b(c, true);
  b.fit();
  const auto& ha = a.history().back().second;
  const auto& hb = b.history().back().second;
  for (const auto& [name, r] : ha.tasks) {
    EXPECT_EQ(r.loss, hb.tasks.at(name).loss) << name;
    EXPECT_EQ(r.metric, hb.tasks.at(name).metric) << name;
  }
}

TEST(Train, OneIterationOverAllPatchesEqualsTopMOfAFullPass) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  const int64_t N = 36;  // 168 / 28 = 6 x 6
  c.M = 5;
  c.I = N - c.M;
  train::Trainer t(c, true);
  for (int64_t id : {0, 3}) {
    train::Attention r = t.attend("test", {id}, true);
    ASSERT_EQ(r.all_scores.numel(), N);
    Tensor top = ops::topk(r.all_scores, c.M, 1).second;
    std::vector<int64_t> a = r.idx.to_vector<int64_t>(), b = top.to_vector<int64_t>();
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b) << "image " << id;
  }
}

TEST(Train, LoadingModesSelectTheSamePatches) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  train::Trainer t(c, true);
  const data::DataSource& rd = t.source("train");
  std::vector<int64_t> ids = {0, 1, 2, 3};
  IPSOptions opt;
  opt.M = 4;
  opt.I = 7;
  for (bool dedup : {false, true}) {
    opt.dedup_zero = dedup;
    opt.dedup_identical = dedup;
    Generator g1(9), g2(9);
    train::LazySource lazy(rd, ids, Device::cpu());
    train::EagerSource eager(rd, ids, Device::cpu());
    SelectionResult a = ips_select(ips_net(t), lazy, opt, g1);
    SelectionResult b = ips_select(ips_net(t), eager, opt, g2);
    EXPECT_EQ(a.idx.to_vector<int64_t>(), b.idx.to_vector<int64_t>()) << "dedup " << dedup;
    // Eager sequential: one image at a time, the batch's shared permutation.
    std::vector<int64_t> seq;
    Generator start(9);
    for (int64_t id : ids) {
      Generator g = start;
      train::EagerSource one(rd, {id}, Device::cpu());
      std::vector<int64_t> r = ips_select(ips_net(t), one, opt, g).idx.to_vector<int64_t>();
      seq.insert(seq.end(), r.begin(), r.end());
    }
    EXPECT_EQ(seq, a.idx.to_vector<int64_t>()) << "dedup " << dedup;
    // The shortcut encodes fewer patches.
    if (dedup) {
      EXPECT_LT(a.n_encoded, 4 * 36);
    } else {
      EXPECT_EQ(a.n_encoded, 4 * 36);
    }
  }
}

TEST(Train, StkimMasksTheTopCandidates) {
  TempDir out;
  train::Trainer t(tiny_config(out.path), true);
  const data::DataSource& rd = t.source("train");
  IPSOptions opt;
  opt.M = 4;
  opt.I = 8;
  opt.dedup_zero = false;
  opt.dedup_identical = false;
  // Masking every candidate with p = 1 zeroes all scores: ties keep the
  // earliest candidates, so the selection is the first M of the visiting order.
  opt.mask_K = 1000;
  opt.mask_p = 1.0;
  Generator g1(1), g2(1), g3(1);
  train::LazySource s(rd, {0, 1}, Device::cpu());
  SelectionResult masked = ips_select(ips_net(t), s, opt, g1);
  std::vector<int64_t> perm = g2.permutation(36);
  std::vector<int64_t> expect;
  for (int b = 0; b < 2; ++b) expect.insert(expect.end(), perm.begin(), perm.begin() + 4);
  EXPECT_EQ(masked.idx.to_vector<int64_t>(), expect);
  // p = 0 masks nothing: the plain selection.
  opt.mask_p = 0.0;
  SelectionResult unmasked = ips_select(ips_net(t), s, opt, g3);
  opt.mask_K = 0;
  Generator g4(1);
  SelectionResult plain = ips_select(ips_net(t), s, opt, g4);
  EXPECT_EQ(unmasked.idx.to_vector<int64_t>(), plain.idx.to_vector<int64_t>());
}

TEST(Train, SemanticDiversityLossTrainsTheSharedProjection) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  c.semantic_diversity_loss = true;
  c.w_div = 3.0;
  c.w_sem = 1.0;
  train::Trainer t(c, true);
  ASSERT_TRUE(t.model().named_parameters().contains("transf.fb.weight"));
  std::vector<int64_t> order = t.epoch_order(0);
  double loss = t.train_step(std::vector<int64_t>(order.begin(), order.begin() + 8));
  EXPECT_TRUE(std::isfinite(loss));
  Tensor g = t.model().named_parameters().at("transf.fb.weight").grad();
  ASSERT_TRUE(g.defined());
  EXPECT_GT(ops::sum(ops::abs(g)).item(), 0.0);
  // The total includes w_div * L_div + w_sem * L_sem on top of the task loss.
  train::Config plain = tiny_config(out.path);
  plain.run_name = "plain";
  train::Trainer p(plain, true);
  double loss_plain = p.train_step(std::vector<int64_t>(order.begin(), order.begin() + 8));
  EXPECT_GT(loss, loss_plain);
}

TEST(Train, FrozenBackboneKeepsEncoderWeights) {
  TempDir out;
  train::Config c = tiny_config(out.path);
  c.freeze = "all";
  train::Trainer t(c, true);
  Tensor w = t.model().named_parameters().at("encoder.conv1.weight");
  EXPECT_FALSE(w.requires_grad());
  std::vector<float> before = w.to_vector<float>();
  Tensor rm = t.model().named_buffers().at("encoder.bn1.running_mean");
  std::vector<float> rm_before = rm.to_vector<float>();
  std::vector<int64_t> order = t.epoch_order(0);
  t.train_step(std::vector<int64_t>(order.begin(), order.begin() + 8));
  EXPECT_EQ(w.to_vector<float>(), before);
  EXPECT_EQ(rm.to_vector<float>(), rm_before);  // frozen statistics
  Tensor fc = t.model().named_parameters().at("transf.crs_attn.fc.weight");
  EXPECT_TRUE(fc.requires_grad());
}

TEST(Train, EagerSequentialTrainsLikeEager) {
  TempDir o1, o2;
  train::Config a = tiny_config(o1.path);
  a.eager = true;
  a.B_seq = 8;
  a.dropout = 0.0;
  train::Config b = a;
  b.out_dir = o2.path;
  b.B_seq = 2;
  train::Trainer ta(a, true), tb(b, true);
  std::vector<int64_t> ids = ta.epoch_order(0);
  ids.resize(8);
  EXPECT_NEAR(ta.train_step(ids), tb.train_step(ids), 1e-5);
  // Eager sequential makes only B_seq images resident ahead of the selection;
  // the others are built (and dropped) one sub-batch at a time.
  auto prepared = tb.prepare(tb.source("train"), ids);
  ASSERT_EQ(prepared->eager.size(), 4u);
  EXPECT_TRUE(prepared->eager[0] != nullptr);
  EXPECT_EQ(prepared->eager[0]->batch(), 2);
  for (size_t k = 1; k < 4; ++k) EXPECT_TRUE(prepared->eager[k] == nullptr) << k;
}

TEST(Config, ReferenceKeysParse) {
  train::Config c = train::parse_config(R"(
dataset: mnist
n_class: 10
eager: True
B: 16
B_seq: 16
n_epoch: 150
n_epoch_warmup: 10
lr: 0.001
wd: 0.1
n_worker: 8
pin_memory: True
use_pos: True
shuffle: True
shuffle_style: batch
is_image: True
n_chan_in: 1
patch_size: [50, 50]
patch_stride: [50, 50]
enc_type: resnet18
pretrained: False
n_res_blocks: 2
N: 900
M: 100
I: 100
D: 128
H: 8
D_k: 16
D_v: 16
D_inner: 512
attn_dropout: 0.1
dropout: 0.1
n_token: 4
tasks:
  task0: {id: 0, name: majority, act_fn: softmax, metric: accuracy}
  task1: {id: 1, name: max, act_fn: softmax, metric: accuracy}
  task2: {id: 2, name: top, act_fn: softmax, metric: accuracy}
  task3: {id: 3, name: multi, act_fn: sigmoid, metric: multilabel_accuracy}
track_efficiency: False
track_epoch: 0
semantic_diversity_loss: False
mask_p: 0.0
mask_K: 0
attention_map: False
)",
                                        "ref");
  train::validate(c);
  EXPECT_EQ(c.patch_size, 50);
  EXPECT_EQ(c.tasks.size(), 4u);
  EXPECT_EQ(c.tasks[3].act_fn, "sigmoid");
  // Round trip through the saved YAML.
  train::Config d = train::parse_config(train::to_yaml(c), "saved");
  EXPECT_EQ(train::to_yaml(d), train::to_yaml(c));
}

TEST(Config, ErrorsAreOneClearLine) {
  auto msg = [](const std::string& yaml) {
    try {
      train::validate(train::parse_config(yaml, "cfg.yaml"));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg("n_epochs: 3\n").find("did you mean 'n_epoch'"), std::string::npos) << msg("n_epochs: 3\n");
  EXPECT_NE(msg("B: sixteen\n").find("'B': expected an integer, got sixteen"), std::string::npos);
  EXPECT_NE(msg("lr: [1]\n").find("'lr': expected a number"), std::string::npos);
  EXPECT_NE(msg("M: 1000\nN: 900\n").find("larger than N"), std::string::npos);
  EXPECT_NE(msg("shuffle_style: random\n").find("batch or instance"), std::string::npos);
  EXPECT_NE(msg("tasks: {t: {name: majority, act_fn: relu}}\n").find("softmax or sigmoid"), std::string::npos);
  EXPECT_NE(msg("B: [").find("not valid YAML"), std::string::npos);
  for (const std::string& m : {msg("n_epochs: 3\n"), msg("B: sixteen\n")}) EXPECT_EQ(m.find('\n'), std::string::npos);
  train::Config c;
  EXPECT_THROW(train::apply_override(c, "nope"), Error);
  train::apply_override(c, "patch_size=[32, 32]");
  EXPECT_EQ(c.patch_size, 32);
}

TEST(Config, CommandLineErrorPaths) {
  TempDir out;
  std::string bin = IPSNET_BINARY;
  std::string cfg = out / "bad.yaml";
  std::ofstream(cfg) << "n_epochs: 2\n";
  std::string text;
  EXPECT_EQ(testing_data::run_capture(bin + " train --quiet --config " + cfg, &text), 2);
  EXPECT_NE(text.find("did you mean 'n_epoch'"), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  EXPECT_EQ(testing_data::run_capture(bin + " train --quiet --data /nonexistent/dir --out " + out.path, &text), 2);
  EXPECT_NE(text.find("'/nonexistent/dir' is not a directory"), std::string::npos) << text;
  EXPECT_EQ(testing_data::run_capture(bin + " train --quiet --config /nonexistent.yaml", &text), 2);
  EXPECT_NE(text.find("cannot be read"), std::string::npos) << text;
  // M larger than N for this data: 6x6 = 36 patches of 28.
  EXPECT_EQ(testing_data::run_capture(bin + " train --quiet --data " + tiny().dir + " --out " + out.path +
                                          " --set 'patch_size=28;patch_stride=28;M=40'",
                                      &text),
            2);
  EXPECT_NE(text.find("'M': 40 is larger than N = 36"), std::string::npos) << text;
  EXPECT_EQ(testing_data::run_capture(bin + " train --quiet --set B=x", &text), 2);
  EXPECT_NE(text.find("expected an integer"), std::string::npos) << text;
}

TEST(Metrics, AucAndAccuracy) {
  EXPECT_DOUBLE_EQ(train::roc_auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}), 0.75);
  EXPECT_DOUBLE_EQ(train::roc_auc({0.5, 0.5}, {0, 1}), 0.5);
  Tensor p = Tensor::from_vector<float>({0.1f, 0.9f, 0.8f, 0.2f}, {2, 2});
  EXPECT_DOUBLE_EQ(train::accuracy(p, Tensor::from_vector<int64_t>({1, 1}, {2})), 0.5);
  EXPECT_DOUBLE_EQ(train::multilabel_accuracy(p, Tensor::from_vector<float>({0, 1, 1, 0}, {2, 2})), 1.0);
}

TEST(Optim, AdamWMatchesTheFormula) {
  Tensor w = Tensor::from_vector<double>({1.0, -2.0}, {2}).set_requires_grad(true);
  AdamWOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.01;
  AdamW opt({{"w", w}}, o);
  double p = 1.0, m = 0, v = 0;
  for (int t = 1; t <= 3; ++t) {
    opt.zero_grad();
    ops::sum(ops::square(w)).backward();  // g = 2w
    double g = 2 * p;
    opt.step(0.1);
    p -= 0.1 * 0.01 * p;
    m = 0.9 * m + 0.1 * g;
    v = 0.999 * v + 0.001 * g * g;
    p -= 0.1 * (m / (1 - std::pow(0.9, t))) / (std::sqrt(v / (1 - std::pow(0.999, t))) + 1e-8);
    EXPECT_NEAR(w.to_vector<double>()[0], p, 1e-12) << "step " << t;
  }
  EXPECT_NEAR(warmup_cosine_lr(1.0, 0, 10, 100), 0.0, 1e-12);
  EXPECT_NEAR(warmup_cosine_lr(1.0, 5, 10, 100), 0.5, 1e-12);
  EXPECT_NEAR(warmup_cosine_lr(1.0, 10, 10, 100), 1.0, 1e-12);
  EXPECT_NEAR(warmup_cosine_lr(1.0, 99, 10, 100), 1e-3, 1e-12);
}

TEST(Optim, ClipGradNorm) {
  Tensor a = Tensor::from_vector<float>({3, 0}, {2}).set_requires_grad(true);
  ops::sum(ops::mul(a, Tensor::from_vector<float>({3, 4}, {2}))).backward();  // grad (3, 4), norm 5
  EXPECT_NEAR(clip_grad_norm({a}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad().to_vector<float>()[1], 0.8, 1e-5);
}

}  // namespace
}  // namespace ipsnet
