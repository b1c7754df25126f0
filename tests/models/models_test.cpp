// Aggregator, feature projector, positional encoding, ResNet and IPSNet behaviour.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "models/ips_net.h"
#include "models/ips_selection.h"
#include "tests/layers/module_gradcheck.h"
#include "tests/models/golden_util.h"

namespace ipsnet {
namespace {

using testing::module_gradcheck;
using testing::rand_double;

AggregatorOptions tiny_agg() { return AggregatorOptions().n_token(2).H(2).D(6).D_k(3).D_v(2).D_inner(5); }

TEST(Aggregator, NamesAndShapes) {
  Generator gen(1);
  Transformer t(tiny_agg(), gen);
  EXPECT_EQ(t.named_parameters().keys(),
            (std::vector<std::string>{"crs_attn.q", "crs_attn.q_w.weight", "crs_attn.k_w.weight",
                                      "crs_attn.v_w.weight", "crs_attn.fc.weight", "crs_attn.layer_norm.weight",
                                      "crs_attn.layer_norm.bias", "mlp.w_1.weight", "mlp.w_1.bias", "mlp.w_2.weight",
                                      "mlp.w_2.bias", "mlp.layer_norm.weight", "mlp.layer_norm.bias"}));
  EXPECT_EQ(t.crs_attn_->q_.shape(), (Shape{1, 2, 6}));
  double b = std::sqrt(1.0 / 3.0);
  for (float v : t.crs_attn_->q_.to_vector<float>()) EXPECT_LE(std::fabs(v), b);
  Tensor x = Tensor::randn({3, 7, 6}, gen);
  EXPECT_EQ(t.forward(x).shape(), (Shape{3, 2, 6}));
  t.eval();
  Tensor s = t.get_scores(x);
  EXPECT_EQ(s.shape(), (Shape{3, 7}));
  // the attention over patches sums to 1 per (head, token); so do the averaged scores
  std::vector<float> sv = ops::sum(s, {1}).to_vector<float>();
  for (float v : sv) EXPECT_NEAR(v, 1.0f, 1e-5);
  auto th = t.forward_with_heads(x);
  EXPECT_EQ(th.second.shape(), (Shape{3, 2, 2, 2}));
  EXPECT_THROW(t.forward(Tensor::zeros({3, 7, 5})), Error);
}

TEST(Aggregator, GradcheckEndToEnd) {
  Generator gen(2);
  Transformer t(tiny_agg().attn_dropout(0).dropout(0), gen);
  t.train();
  EXPECT_TRUE(module_gradcheck(t, [&](const Tensor& x) { return t.forward(x); }, rand_double({2, 4, 6}, 3)));
  EXPECT_TRUE(module_gradcheck(t, [&](const Tensor& x) { return t.get_scores(x); }, rand_double({2, 4, 6}, 4)));
  EXPECT_TRUE(module_gradcheck(t, [&](const Tensor& x) { return t.forward_with_heads(x).second; },
                               rand_double({2, 4, 6}, 5)));
}

TEST(Aggregator, GradcheckWithDropoutReseeded) {
  Generator gen(3), drop(42);
  Transformer t(tiny_agg().attn_dropout(0.3).dropout(0.3), gen, &drop);
  t.train();
  EXPECT_TRUE(module_gradcheck(t, [&](const Tensor& x) {
    drop.set_state(42, 0);
    return t.forward(x);
  }, rand_double({2, 4, 6}, 6)));
}

TEST(Aggregator, DropoutOnlyInTraining) {
  Generator gen(4);
  Transformer t(tiny_agg().attn_dropout(0.5).dropout(0.5).dropout_seed(9), gen);
  Tensor x = Tensor::randn({2, 5, 6}, gen);
  t.eval();
  Tensor a = t.forward(x), b = t.forward(x);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  t.train();
  Tensor c = t.forward(x);
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());
}

TEST(FeatureProjector, NamesShapesGradcheck) {
  Generator gen(5);
  auto p = make_feature_projector(7, 4, gen);
  EXPECT_EQ(p->state_dict().keys(),
            (std::vector<std::string>{"1.weight", "1.bias", "2.weight", "2.bias", "2.running_mean", "2.running_var",
                                      "2.num_batches_tracked"}));
  EXPECT_EQ(p->forward(Tensor::randn({5, 7}, gen)).shape(), (Shape{5, 4}));
  p->train();
  EXPECT_TRUE(module_gradcheck(*p, [&](const Tensor& x) { return p->forward(x); }, rand_double({6, 7}, 7)));
  p->eval();
  EXPECT_TRUE(module_gradcheck(*p, [&](const Tensor& x) { return p->forward(x); }, rand_double({6, 7}, 8)));
}

TEST(PositionalEncoding, FormulaAndOddD) {
  Tensor pe = sinusoidal_positional_encoding(5, 4, DType::Float64);
  std::vector<double> v = pe.to_vector<double>();
  double w1 = std::exp(-std::log(10000.0) * 2.0 / 4.0);
  EXPECT_DOUBLE_EQ(v[3 * 4 + 0], std::sin(3.0));
  EXPECT_DOUBLE_EQ(v[3 * 4 + 1], std::cos(3.0));
  EXPECT_DOUBLE_EQ(v[3 * 4 + 2], std::sin(3.0 * w1));
  EXPECT_DOUBLE_EQ(v[3 * 4 + 3], std::cos(3.0 * w1));
  EXPECT_THROW(sinusoidal_positional_encoding(5, 3), Error);
}

TEST(ResNet, TorchvisionNamesAndWidths) {
  Generator gen(6);
  ResNet r18(ResNetOptions().in_channels(1).n_res_blocks(2), gen);
  EXPECT_EQ(r18.out_channels(), 128);
  TensorDict sd = r18.state_dict();
  for (const char* n : {"conv1.weight", "bn1.weight", "bn1.running_mean", "bn1.num_batches_tracked",
                        "layer1.0.conv1.weight", "layer1.1.bn2.running_var", "layer2.0.downsample.0.weight",
                        "layer2.0.downsample.1.running_var", "layer2.1.conv2.weight"})
    EXPECT_TRUE(sd.contains(n)) << n;
  EXPECT_FALSE(sd.contains("layer3.0.conv1.weight"));
  EXPECT_FALSE(sd.contains("layer1.0.downsample.0.weight"));
  EXPECT_EQ(sd.at("conv1.weight").shape(), (Shape{64, 1, 7, 7}));
  EXPECT_EQ(sd.size(), 1u + 5 + 2 * 12 + 2 * 12 + 6);  // conv1, bn1, layer1, layer2 (+ downsample)
  EXPECT_EQ(r18.forward(Tensor::zeros({2, 1, 50, 50})).shape(), (Shape{2, 128}));
  // torchvision init: kaiming_normal fan_out -> std sqrt(2 / (64*49)) for conv1
  std::vector<float> w = r18.conv1_->weight_.to_vector<float>();
  double ss = 0;
  for (float v : w) ss += static_cast<double>(v) * v;
  EXPECT_NEAR(std::sqrt(ss / static_cast<double>(w.size())), std::sqrt(2.0 / (64 * 49)), 0.002);

  ResNet r34(ResNetOptions().depth(34).n_res_blocks(4), gen);
  EXPECT_EQ(r34.out_channels(), 512);
  EXPECT_TRUE(r34.state_dict().contains("layer3.5.conv2.weight"));
  EXPECT_EQ(r34.num_parameters(), 21284672);  // torchvision resnet34 without fc (21797672 - 513000)
  ResNet r50(ResNetOptions().depth(50).n_res_blocks(4), gen);
  EXPECT_EQ(r50.out_channels(), 2048);
  EXPECT_EQ(r50.num_parameters(), 23508032);  // torchvision resnet50 without fc (25557032 - 2049000)
  TensorDict s50 = r50.state_dict();
  EXPECT_EQ(s50.at("layer2.0.conv2.weight").shape(), (Shape{128, 128, 3, 3}));  // v1.5: stride on the 3x3
  EXPECT_EQ(s50.at("layer1.0.downsample.0.weight").shape(), (Shape{256, 64, 1, 1}));
  ResNet r50b(ResNetOptions().depth(50).n_res_blocks(2), gen);
  EXPECT_EQ(r50b.out_channels(), 512);
  EXPECT_THROW(ResNet(ResNetOptions().depth(20), gen), Error);
  EXPECT_THROW(ResNet(ResNetOptions().n_res_blocks(3), gen), Error);
  EXPECT_THROW(r18.forward(Tensor::zeros({2, 3, 50, 50})), Error);
}

TEST(ResNet, GradcheckTinyInput) {
  Generator gen(7);
  ResNet r(ResNetOptions().in_channels(1).n_res_blocks(2), gen);
  r.train();
  EXPECT_TRUE(module_gradcheck(r, [&](const Tensor& x) { return r.forward(x); }, rand_double({2, 1, 8, 8}, 9), 2,
                               1e-6, 1e-5, 1e-3));
}

// Activation recomputation: the same outputs, gradients and running stats,
// bit for bit, with less held after the forward. Depth 18 (BasicBlock) and
// 50 (Bottleneck), also with a frozen backbone (eval-mode statistics).
TEST(ResNet, RecomputeGivesIdenticalGradientsAndHoldsLess) {
  for (int depth : {18, 50})
    for (bool frozen : {false, true}) {
      SCOPED_TRACE(str_cat("depth ", depth, frozen ? " frozen" : ""));
      auto run = [&](bool recompute, int64_t* held) {
        Generator gen(11);
        ResNet r(ResNetOptions().depth(depth).in_channels(1).n_res_blocks(2), gen);
        if (frozen) r.freeze_backbone(1);
        r.set_recompute(recompute);
        r.train();
        Tensor x = Tensor::rand({6, 1, 30, 30}, gen);
        Tensor w = Tensor::rand({6, r.out_channels()}, gen);
        const int64_t before = memory_stats().allocated_bytes;
        Tensor y = r.forward(x);
        *held = memory_stats().allocated_bytes - before;
        ops::sum(ops::mul(y, w)).backward();
        std::vector<Tensor> out{y.detach()};
        for (auto& kv : r.named_parameters())
          if (kv.second.requires_grad()) out.push_back(kv.second.grad());
        for (auto& kv : r.named_buffers()) out.push_back(kv.second);
        return out;
      };
      int64_t held_plain = 0, held_recompute = 0;
      std::vector<Tensor> plain = run(false, &held_plain), rec = run(true, &held_recompute);
      ASSERT_EQ(plain.size(), rec.size());
      for (size_t i = 0; i < plain.size(); ++i) {
        SCOPED_TRACE(i);
        ASSERT_EQ(plain[i].shape(), rec[i].shape());
        EXPECT_EQ(testing::max_abs_diff(plain[i].to(DType::Float64), rec[i].to(DType::Float64)), 0.0);
      }
      // ResNet-18 on 30x30: 52,100 vs 93,188 floats per patch (docs/memory_model.md);
      // Bottlenecks and a frozen stem save less.
      EXPECT_LT(held_recompute, depth == 18 && !frozen ? held_plain * 65 / 100 : held_plain)
          << held_recompute << " vs " << held_plain;
    }
}

TEST(ResNet, FreezeBackboneKeepsLastStage) {
  Generator gen(8);
  ResNet r(ResNetOptions().in_channels(3).n_res_blocks(4), gen);
  r.freeze_backbone(1);
  EXPECT_FALSE(r.conv1_->weight_.requires_grad());
  EXPECT_FALSE(r.named_parameters().at("layer3.1.conv2.weight").requires_grad());
  EXPECT_TRUE(r.named_parameters().at("layer4.1.conv2.weight").requires_grad());
  EXPECT_TRUE(r.bn1_->stats_frozen());
  r.train();
  Tensor before = r.bn1_->running_mean_.clone();
  r.forward(Tensor::randn({2, 3, 32, 32}, gen));
  EXPECT_EQ(r.bn1_->running_mean_.to_vector<float>(), before.to_vector<float>());
  EXPECT_EQ(r.bn1_->num_batches_tracked_.item(), 0);
  EXPECT_EQ(std::dynamic_pointer_cast<BatchNorm2d>(r.layers_[3]->operator[](0)->child("bn1"))->num_batches_tracked_.item(),
            1);
}

TEST(IPSNet, NamesProjectionHeadsLoss) {
  Generator gen(9);
  std::vector<TaskSpec> tasks{{"majority", 10, TaskActivation::Softmax}, {"multi", 10, TaskActivation::Sigmoid}};
  IPSNet net(IPSNetOptions()
                 .encoder("resnet18")
                 .in_channels(1)
                 .n_res_blocks(4)
                 .transformer(AggregatorOptions().n_token(2).H(2).D(16).D_k(4).D_v(4).D_inner(8))
                 .tasks(tasks),
             gen);
  TensorDict sd = net.state_dict();
  for (const char* n : {"encoder.conv1.weight", "encoder.layer4.1.bn2.running_var", "encoder_proj.weight",
                        "encoder_proj.bias", "transf.crs_attn.q", "transf.crs_attn.fc.weight",
                        "transf.mlp.layer_norm.bias", "output_layers.majority.0.weight", "output_layers.multi.0.bias"})
    EXPECT_TRUE(sd.contains(n)) << n;
  EXPECT_EQ(net.encoder_out(), 512);
  EXPECT_EQ(sd.at("encoder_proj.weight").shape(), (Shape{16, 512}));
  net.train();
  Tensor emb = net.encode(Tensor::randn({6, 1, 32, 32}, gen));  // (B*L, D)
  EXPECT_EQ(emb.shape(), (Shape{6, 16}));
  Tensor tokens = net.aggregate(emb.reshape({2, 3, 16}) + sinusoidal_positional_encoding(3, 16).unsqueeze(0));
  auto logits = net.heads(tokens);
  EXPECT_EQ(logits.at("multi").shape(), (Shape{2, 10}));
  std::map<std::string, Tensor> y{{"majority", Tensor::from_vector<int64_t>({1, 2}, {2})},
                                  {"multi", Tensor::zeros({2, 10})}};
  Tensor loss = net.loss(logits, y);
  double manual = (ops::cross_entropy(logits.at("majority"), y.at("majority")).item() +
                   ops::binary_cross_entropy_with_logits(logits.at("multi"), y.at("multi")).item()) /
                  2;
  EXPECT_NEAR(loss.item(), manual, 1e-6);
  loss.backward();
  EXPECT_TRUE(net.encoder_->named_parameters().at("conv1.weight").grad().defined());
  EXPECT_EQ(net.get_scores(emb.reshape({2, 3, 16})).shape(), (Shape{2, 3}));
  y.erase("multi");
  EXPECT_THROW(net.loss(logits, y), Error);
  // n_token must match the number of tasks; D = encoder width needs no projection
  EXPECT_THROW(IPSNet(IPSNetOptions().transformer(AggregatorOptions().n_token(3)).tasks(tasks), gen), Error);
  IPSNet same(IPSNetOptions().n_res_blocks(2).transformer(AggregatorOptions().n_token(2).D(128).D_k(4).D_v(4).D_inner(8)).tasks(tasks), gen);
  EXPECT_EQ(same.encoder_proj_, nullptr);
  EXPECT_FALSE(same.state_dict().contains("encoder_proj.weight"));
}

// A batch whose non-zero patches repeat: patch p of every image shows pattern
// p % 5, patch p % 7 == 0 is empty (known zero).
class RepeatingSource : public PatchSource {
 public:
  RepeatingSource(int64_t B, int64_t N, Generator& gen) : B_(B), N_(N), patterns_(Tensor::rand({5, 1, 16, 16}, gen)) {}
  int64_t batch() const override { return B_; }
  int64_t num_patches() const override { return N_; }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override {
    const int64_t n = static_cast<int64_t>(patch.size());
    Tensor out = Tensor::zeros({n, 1, 16, 16});
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = patch[static_cast<size_t>(i)];
      if (!is_zero(image[static_cast<size_t>(i)], p)) out.select(0, i).copy_(patterns_.select(0, p % 5));
    }
    return out;
  }
  bool is_zero(int64_t, int64_t p) const override { return p % 7 == 0; }

 private:
  int64_t B_, N_;
  Tensor patterns_;
};

// A 2-stage ResNet-18 IPSNet with a small aggregator, one 3-class task.
IPSNet tiny_selection_net(Generator& gen) {
  return IPSNet(IPSNetOptions()
                    .encoder("resnet18")
                    .in_channels(1)
                    .n_res_blocks(2)
                    .transformer(AggregatorOptions().n_token(1).H(2).D(8).D_k(4).D_v(4).D_inner(8))
                    .tasks({{"t", 3, TaskActivation::Softmax}}),
                gen);
}

TEST(IPSSelection, IdenticalPatchesAreEncodedOnceWithTheSameSelection) {
  Generator gen(21);
  IPSNet net = tiny_selection_net(gen);
  RepeatingSource src(3, 40, gen);
  IPSOptions plain;
  plain.M = 4;
  plain.I = 6;
  plain.dedup_zero = false;
  plain.dedup_identical = false;
  Generator g0(5);
  SelectionResult ref = ips_select(net, src, plain, g0);
  EXPECT_EQ(ref.n_encoded, 3 * 40);
  for (bool zero : {false, true}) {
    IPSOptions o = plain;
    o.dedup_zero = zero;
    o.dedup_identical = true;
    Generator g(5);
    SelectionResult r = ips_select(net, src, o, g);
    EXPECT_EQ(r.idx.to_vector<int64_t>(), ref.idx.to_vector<int64_t>()) << "zero " << zero;
    EXPECT_LT(testing::max_abs_diff(r.scores, ref.scores), 1e-5) << "zero " << zero;
    // Each chunk (the first 4, then 6 per image, over 3 images) holds at most
    // 6 distinct contents (5 patterns and the empty patch): 7 chunks.
    EXPECT_LE(r.n_encoded, 7 * 6) << "zero " << zero;
  }
}

TEST(IPSSelection, Bf16SelectionRunsAndMostlyAgrees) {
  if (!backend_for(Device::cpu()).supports_bf16_conv())
    GTEST_SKIP() << "this CPU has no AVX512-BF16: bfloat16 selection is not available";
  Generator gen(22);
  IPSNet net = tiny_selection_net(gen);
  RepeatingSource src(3, 40, gen);
  IPSOptions o;
  o.M = 4;
  o.I = 6;
  Generator g1(5), g2(5);
  SelectionResult f32 = ips_select(net, src, o, g1);
  o.bf16 = true;
  SelectionResult b16 = ips_select(net, src, o, g2);
  EXPECT_FALSE(conv_bf16_enabled()) << "the guard is released after the selection";
  ASSERT_EQ(b16.idx.shape(), f32.idx.shape());
  EXPECT_LT(testing::max_abs_diff(b16.scores, f32.scores), 0.05);
}

// Patches that differ from one pattern by a small amount each (pattern +
// eps * noise_p), so that their scores are near-ties that bfloat16's
// rounding reorders; patch p % 7 == 0 is empty (known zero).
class NearTieSource : public PatchSource {
 public:
  NearTieSource(int64_t B, int64_t N, double eps, Generator& gen)
      : B_(B), N_(N), base_(Tensor::rand({1, 1, 16, 16}, gen)), noise_(Tensor::rand({B * N, 1, 16, 16}, gen)),
        eps_(eps) {}
  int64_t batch() const override { return B_; }
  int64_t num_patches() const override { return N_; }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override {
    const int64_t n = static_cast<int64_t>(patch.size());
    Tensor out = Tensor::zeros({n, 1, 16, 16});
    for (int64_t i = 0; i < n; ++i) {
      const int64_t b = image[static_cast<size_t>(i)], p = patch[static_cast<size_t>(i)];
      if (!is_zero(b, p))
        out.select(0, i).copy_(ops::add(base_.select(0, 0), ops::mul(noise_.select(0, b * N_ + p), eps_)));
    }
    return out;
  }
  bool is_zero(int64_t, int64_t p) const override { return p % 7 == 0; }

 private:
  int64_t B_, N_;
  Tensor base_, noise_;
  double eps_;
};

// bf16_margin: candidates near the top-M boundary are encoded again in
// float32, which gives back the float32 selection where plain bfloat16
// swaps near-ties; nothing is rescored without bf16 or with margin 0.
TEST(IPSSelection, Bf16MarginGivesTheFloat32Selection) {
  if (!backend_for(Device::cpu()).supports_bf16_conv())
    GTEST_SKIP() << "SKIPPED: this CPU has no AVX512-BF16: bfloat16 selection is not available";
  Generator gen(23);
  IPSNet net = tiny_selection_net(gen);
  NearTieSource src(4, 60, 0.02, gen);
  IPSOptions o;
  o.M = 5;
  o.I = 7;
  o.bf16_margin = 0.005;
  auto run = [&](bool bf16, double margin) {
    IPSOptions x = o;
    x.bf16 = bf16;
    x.bf16_margin = margin;
    Generator g(5);
    return ips_select(net, src, x, g);
  };
  auto sets = [](const SelectionResult& r) {
    std::vector<int64_t> v = r.idx.to_vector<int64_t>();
    const int64_t M = r.idx.size(1);
    for (size_t b = 0; b < v.size(); b += static_cast<size_t>(M))
      std::sort(v.begin() + static_cast<std::ptrdiff_t>(b), v.begin() + static_cast<std::ptrdiff_t>(b) + M);
    return v;
  };
  const SelectionResult f32 = run(false, 0.005), plain = run(true, 0.0), fixed = run(true, 0.005),
                        wide = run(true, 0.5);
  EXPECT_EQ(f32.n_rescored, 0) << "float32 selection rescores nothing";
  EXPECT_EQ(plain.n_rescored, 0) << "margin 0 rescores nothing";
  ASSERT_NE(sets(plain), sets(f32)) << "the case does not test anything: plain bfloat16 already selects as float32";
  EXPECT_EQ(sets(fixed), sets(f32));
  EXPECT_EQ(sets(wide), sets(f32));
  EXPECT_GT(fixed.n_rescored, 0);
  EXPECT_LE(fixed.n_rescored, wide.n_rescored);
  EXPECT_LE(wide.n_rescored, 4 * 60) << "a candidate is encoded again at most once";
  EXPECT_LT(testing::max_abs_diff(fixed.scores, f32.scores), 1e-5);
}

TEST(IPSNet, TorchvisionStateDictLoadsIntoEncoder) {
  // A torchvision-named state dict (no prefix) written as safetensors loads into the encoder directly.
  Generator gen(10);
  ResNet src(ResNetOptions().in_channels(1).n_res_blocks(2), gen);
  golden::fill_hashed(src);
  std::string path = ::testing::TempDir() + "/tv_resnet.safetensors";
  safetensors::save(path, src.state_dict(), {{"format", "pt"}});
  std::vector<TaskSpec> tasks{{"t", 3, TaskActivation::Softmax}};
  IPSNet net(IPSNetOptions().n_res_blocks(2).transformer(AggregatorOptions().n_token(1).D(128).D_k(8).D_v(8).D_inner(16)).tasks(tasks), gen);
  net.encoder_->load_state_dict(safetensors::load_tensors(path));
  EXPECT_EQ(net.state_dict().at("encoder.layer2.0.downsample.1.running_var").to_vector<float>(),
            src.state_dict().at("layer2.0.downsample.1.running_var").to_vector<float>());
}

}  // namespace
}  // namespace ipsnet
