// Issue 16 items 1-2: explanation maps (train/explain.h). Grad-CAM, Grad-CAM++
// and CAM of the full-image CNN against a PyTorch implementation
// (tests/fixtures/make_explain_golden.py), the formulas on a gradient that
// varies over space, scale_cam_image and the spreading of patch scores by
// hand, and the maps of the methods end to end: shape, range, IPS's and ATS's
// attention constant per patch and ordered like attend()'s scores, the
// parameters' gradients, BatchNorm statistics and train/eval mode untouched,
// the one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "layers/mode_guard.h"
#include "models/safetensors.h"
#include "tests/models/golden_util.h"
#include "tests/train/tiny_data.h"
#include "train/explain.h"
#include "train/methods/heads.h"
#include "train/trainer.h"

namespace ipsnet {
namespace {

using testing_data::TempDir;
using testing_train::tiny;

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to(DType::Float64).contiguous().to_vector<double>();
  std::vector<double> vb = b.to(DType::Float64).contiguous().to_vector<double>();
  EXPECT_EQ(va.size(), vb.size());
  double m = 0;
  for (size_t i = 0; i < va.size() && i < vb.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- the CNN maps against PyTorch ---------------------------------------------

// method cnn's network with its parameter names (encoder.*, output_layers.majority.0.*).
struct GoldenCnn : Module {
  GoldenCnn(int64_t in_ch, Generator& gen) : Module("GoldenCnn") {
    resnet = register_module(
        "encoder", std::make_shared<ResNet>(ResNetOptions().depth(18).in_channels(in_ch).n_res_blocks(2), gen));
    heads = train::make_task_heads({{"majority", 0, "softmax", "accuracy", 10}}, resnet->out_channels(), gen);
    register_module("output_layers", heads.module);
  }
  std::shared_ptr<ResNet> resnet;
  train::TaskHeads heads;
};

TEST(Explain, GoldenAgainstPyTorch) {
  const std::string path = golden::fixture("explain.safetensors");
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  TensorDict fx = safetensors::load_tensors(path);
  // The network runs in float64 on both sides; the maps are scaled in float32
  // (as pytorch-grad-cam does), so they agree to float32 rounding (1.2e-7 measured): 1e-6.
  golden::Comparer raw(1e-9);
  double worst_map = 0;
  for (const char* name : {"g1", "g3"}) {
    const std::string p = std::string(name) + ".";
    Tensor x = fx.at(p + "x").to(DType::Float64);
    std::vector<int64_t> classes = fx.at(p + "classes").to_vector<int64_t>();
    std::vector<int64_t> size = fx.at(p + "size").to_vector<int64_t>();
    Generator gen(0);
    GoldenCnn net(x.size(1), gen);
    golden::fill_hashed(net);
    net.to(DType::Float64);
    TrainModeGuard eval_mode(net, false);
    Linear& head = *net.heads.linear.at("majority");
    Tensor A;
    {
      NoGradGuard ng;
      A = net.resnet->features(x);
    }
    for (const char* kind : {"gradcam", "gradcam_pp", "cam"}) {
      const std::string k = p + kind + ".";
      // The weighted sum of the fixture's weights over our activations.
      raw.check(k + "cam", train::weighted_cam(A, fx.at(k + "weights"), std::string(kind) != "cam"), fx.at(k + "cam"));
      Tensor m = train::cnn_explanation(*net.resnet, head, x, kind, classes, size[0], size[1]);
      ASSERT_EQ(m.shape(), fx.at(k + "map").shape()) << k;
      EXPECT_EQ(m.dtype(), DType::Float32);
      const double e = max_abs_diff(m, fx.at(k + "map"));
      EXPECT_LE(e, 1e-6) << k << "map";
      worst_map = std::max(worst_map, e);
    }
  }
  EXPECT_TRUE(raw.result());
  std::printf("explain golden: raw cams %s, maps max abs error %.3g\n", raw.result().message(), worst_map);
}

TEST(Explain, GradCamFormulasOnAGradientThatVariesOverSpace) {
  TensorDict fx = safetensors::load_tensors(golden::fixture("explain.safetensors"));
  const Tensor& A = fx.at("pp.A");
  const Tensor& g = fx.at("pp.g");
  golden::Comparer c(1e-12);
  c.check("gradcam", train::gradcam_weights(g), fx.at("pp.gradcam"));
  c.check("gradcam_pp", train::gradcam_pp_weights(A, g), fx.at("pp.gradcam_pp"));
  c.check("cam_pp", train::weighted_cam(A, fx.at("pp.gradcam_pp"), true), fx.at("pp.cam_pp"));
  EXPECT_TRUE(c.result());
  // By hand, one channel of one pixel pair: g = (0.5, 0), A = (1, 3):
  // a = 0.25 / (0.5 + 4 * 0.125 + 1e-6), a = 0 where g == 0; w = 0.5 a.
  Tensor a1 = Tensor::from_vector<double>({1, 3}, {1, 1, 1, 2});
  Tensor g1 = Tensor::from_vector<double>({0.5, 0}, {1, 1, 1, 2});
  EXPECT_NEAR(train::gradcam_pp_weights(a1, g1).item(), 0.5 * 0.25 / (1.0 + 1e-6), 1e-15);
  EXPECT_NEAR(train::gradcam_weights(g1).item(), 0.25, 1e-15);
  // A negative gradient contributes nothing to Grad-CAM++.
  Tensor gneg = Tensor::from_vector<double>({-0.5, -0.1}, {1, 1, 1, 2});
  EXPECT_EQ(train::gradcam_pp_weights(a1, gneg).item(), 0.0);
}

TEST(Explain, ScaleCamImageByHand) {
  // (m - min) / (1e-7 + max): [[0, 1], [2, 3]] -> [[0, 1/3], [2/3, 1]] (to 1e-7),
  // enlarged 2x with half-pixel centres: row 0 samples x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
  Tensor cam = Tensor::from_vector<double>({0, 1, 2, 3}, {1, 2, 2});
  std::vector<float> m = train::scale_cam_image(cam, 4, 4).to_vector<float>();
  const double r[4] = {0, 1.0 / 12, 3.0 / 12, 4.0 / 12};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(m[static_cast<size_t>(i)], r[i], 1e-6) << i;
  EXPECT_NEAR(m[15], 1.0, 1e-6);
  // Row 1 samples y = 0.25: 3/4 of row 0 plus 1/4 of row 1.
  EXPECT_NEAR(m[4], 0.25 * (2.0 / 3), 1e-6);
  // A flat cam (Grad-CAM of a class nothing supports) is all 0, as in the library.
  std::vector<float> z = train::scale_cam_image(Tensor::zeros({2, 3, 3}, DType::Float64), 5, 7).to_vector<float>();
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

TEST(Explain, SpreadScoresByHand) {
  // 6x8 image, 3x3 patches, stride 2: a 2x3 grid with overlaps; row 5 and
  // column 7 are covered by no patch.
  PatchGrid g{6, 8, 3, 3, 2, 2};
  ASSERT_EQ(g.count(), 6);
  Tensor s = Tensor::from_vector<float>({1, 5, 2, 4, 3, 6, /* image 2: all equal */ 7, 7, 7, 7, 7, 7}, {2, 6});
  std::vector<float> m = train::spread_scores(s, g).to_vector<float>();
  ASSERT_EQ(m.size(), 2u * 6 * 8);
  auto at = [&](int y, int x) { return m[static_cast<size_t>(y * 8 + x)]; };
  EXPECT_FLOAT_EQ(at(0, 0), 0.0f);   // patch 0 only: score 1 = min
  EXPECT_FLOAT_EQ(at(2, 2), 0.8f);   // patches 0, 1, 3, 4: max 5 -> (5 - 1) / 5
  EXPECT_FLOAT_EQ(at(0, 4), 0.8f);   // patches 1, 2: max(5, 2)
  EXPECT_FLOAT_EQ(at(4, 6), 1.0f);   // patch 5: score 6 = max
  EXPECT_FLOAT_EQ(at(3, 1), 0.6f);   // patch 3: (4 - 1) / 5
  EXPECT_FLOAT_EQ(at(5, 3), 0.0f);   // uncovered: the minimum score
  EXPECT_FLOAT_EQ(at(2, 7), 0.0f);   // uncovered
  for (size_t i = 48; i < 96; ++i) EXPECT_EQ(m[i], 0.0f) << "all-equal scores must give an all-0 map";
  EXPECT_NE(error_of([&] { train::spread_scores(Tensor::zeros({1, 5}), g); }).find("must be (B, 6)"),
            std::string::npos);
}

// ---- the methods' maps end to end -----------------------------------------------

train::Config method_config(const std::string& method, const std::string& out, const std::string& extra = "") {
  train::Config c = testing_train::tiny_config(out);
  train::Config m = train::parse_config(
      "method: " + method + "\nB: 4\nB_seq: 4\nM: 4\nI: 8\npatch_size: 28\npatch_stride: 28\nseed: 5\n" + extra,
      "test");
  m.data_dir = c.data_dir;
  m.out_dir = out;
  m.run_name = "run";
  m.device = "cpu";
  return m;
}

// Everything explain() must leave as it was: gradients, parameters and buffers, mode.
struct Snapshot {
  std::vector<Tensor> grads;
  TensorDict state;
  bool training;
  explicit Snapshot(Module& m) : training(m.is_training()) {
    for (const Tensor& p : m.parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : Tensor());
    for (const auto& it : m.state_dict()) state.insert(it.first, it.second.clone());
  }
  void expect_same(Module& m) const {
    std::vector<Tensor> ps = m.parameters();
    ASSERT_EQ(ps.size(), grads.size());
    int n_defined = 0;
    for (size_t i = 0; i < ps.size(); ++i) {
      ASSERT_EQ(ps[i].grad().defined(), grads[i].defined()) << i;
      if (!grads[i].defined()) continue;
      ++n_defined;
      EXPECT_EQ(max_abs_diff(ps[i].grad(), grads[i]), 0.0) << "gradient of parameter " << i << " changed";
    }
    EXPECT_GT(n_defined, 0) << "the test needs gradients to compare";
    for (const auto& it : m.state_dict())
      EXPECT_EQ(max_abs_diff(it.second, state.at(it.first)), 0.0) << it.first << " changed";
    EXPECT_EQ(m.is_training(), training);
  }
};

// A train step (so that gradients exist), then explain() of `kind` on images 0..3.
Tensor explain_after_step(train::Trainer& t, const std::string& kind, Generator& gen) {
  t.train_step(std::vector<int64_t>{0, 1, 2, 3});
  Snapshot before(t.model());
  const data::DataSource& src = t.source("train");
  train::Batch batch(src, {0, 1, 2, 3}, Device::cpu(), false, 4);
  Tensor m = t.method().explain(batch, kind, "majority", {0, 1, 2, 3}, gen);
  before.expect_same(t.model());
  return m;
}

void expect_unit_range(const Tensor& m, int64_t B, int64_t H, int64_t W) {
  ASSERT_EQ(m.shape(), Shape({B, H, W}));
  ASSERT_EQ(m.dtype(), DType::Float32);
  ASSERT_TRUE(m.device().is_cpu());
  std::vector<float> v = m.to_vector<float>();
  for (int64_t b = 0; b < B; ++b) {
    const float* p = v.data() + b * H * W;
    const float lo = *std::min_element(p, p + H * W), hi = *std::max_element(p, p + H * W);
    EXPECT_GE(lo, 0.0f) << b;
    EXPECT_LE(hi, 1.0f) << b;
  }
}

TEST(Explain, CnnMapsLeaveTheModelAsItWas) {
  TempDir out;
  train::Trainer t(method_config("cnn", out.path, "cnn_scale: 0.5\n"), true);
  ASSERT_EQ(t.method().explanations(), (std::vector<std::string>{"gradcam_pp", "gradcam", "cam"}));
  const int64_t H = t.source("train").grid(0).height, W = t.source("train").grid(0).width;
  std::map<std::string, Tensor> maps;
  for (const std::string kind : {"gradcam_pp", "gradcam", "cam"}) {
    Generator gen(1);
    maps[kind] = explain_after_step(t, kind, gen);
    expect_unit_range(maps[kind], 4, H, W);
  }
  // CAM has no ReLU: every image's map reaches 1 to scale_cam_image's 1e-7
  // at its largest cell (84x84 -> 11x11 cells, enlarged about 15x: the
  // interpolated maximum is within a few % of it).
  std::vector<float> cam = maps["cam"].to_vector<float>();
  for (int64_t b = 0; b < 4; ++b)
    EXPECT_GT(*std::max_element(cam.begin() + b * H * W, cam.begin() + (b + 1) * H * W), 0.8f) << b;
  EXPECT_GT(max_abs_diff(maps["cam"], maps["gradcam_pp"]), 1e-3) << "the kinds must differ";
  // The same call again gives the same map; under no-grad and bf16 it still runs.
  {
    const data::DataSource& src = t.source("train");
    train::Batch batch(src, {0, 1, 2, 3}, Device::cpu(), false, 4);
    Generator gen(1);
    Tensor again = t.method().explain(batch, "gradcam_pp", "majority", {0, 1, 2, 3}, gen);
    NoGradGuard ng;
    EXPECT_EQ(max_abs_diff(t.method().explain(batch, "gradcam_pp", "majority", {0, 1, 2, 3}, gen), again), 0.0);
    PrecisionGuard bf16(true);
    expect_unit_range(t.method().explain(batch, "gradcam", "majority", {0, 1, 2, 3}, gen), 4, H, W);
  }
  // The map depends on the class asked for.
  const data::DataSource& src = t.source("train");
  train::Batch batch(src, {0, 1, 2, 3}, Device::cpu(), false, 4);
  Generator gen(1);
  EXPECT_GT(max_abs_diff(t.method().explain(batch, "cam", "majority", {9, 8, 7, 6}, gen), maps["cam"]), 1e-3);
  // Bad classes, task or kind: one line each.
  for (const std::string& m :
       {error_of([&] { t.method().explain(batch, "cam", "majority", {0, 1}, gen); }),
        error_of([&] { t.method().explain(batch, "gradcam", "majority", {0, 1, 2, 10}, gen); }),
        error_of([&] { t.method().explain(batch, "gradcam", "nope", {0, 1, 2, 3}, gen); }),
        error_of([&] { t.method().explain(batch, "attention", "majority", {0, 1, 2, 3}, gen); })}) {
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_NE(m, "(no error)");
  }
  EXPECT_NE(error_of([&] { t.method().explain(batch, "cam", "majority", {0, 1}, gen); })
                .find("explain: 2 classes given for 4 images"),
            std::string::npos);
  EXPECT_NE(error_of([&] { t.method().explain(batch, "gradcam", "majority", {0, 1, 2, 10}, gen); })
                .find("class 10 out of range for a head of 10 classes"),
            std::string::npos);
  EXPECT_NE(error_of([&] { t.method().explain(batch, "gradcam", "nope", {0, 1, 2, 3}, gen); })
                .find("explain: unknown task 'nope' (tasks: majority, max, multi, top)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { t.method().explain(batch, "attention", "majority", {0, 1, 2, 3}, gen); })
                .find("method 'cnn' has no explanation map 'attention' (it has: gradcam_pp, gradcam, cam)"),
            std::string::npos);
}

// The attention map of IPS or ATS: constant on each (non-overlapping) patch,
// ordered like attend()'s all_scores, min 0 and max 1 per image.
void check_attention_map(train::Trainer& t) {
  ASSERT_EQ(t.method().explanations(), std::vector<std::string>{"attention"});
  const data::DataSource& src = t.source("train");
  const PatchGrid g = src.grid(0);
  ASSERT_EQ(g.patch_h, g.stride_h);  // non-overlapping, covering: 168 = 6 x 28
  ASSERT_EQ(g.rows() * g.patch_h, g.height);
  Generator gen(3);
  Tensor m = explain_after_step(t, "attention", gen);
  expect_unit_range(m, 4, g.height, g.width);
  Tensor all;
  {
    train::Batch batch(src, {0, 1, 2, 3}, Device::cpu(), false, 4);
    Generator gen2(3);
    NoGradGuard ng;
    TrainModeGuard eval_mode(t.model(), false);
    all = t.method().attend(batch, true, gen2).all_scores;
  }
  ASSERT_TRUE(all.defined());
  const int64_t N = g.count(), HW = g.height * g.width;
  std::vector<float> s = all.to(DType::Float32).to_vector<float>(), v = m.to_vector<float>();
  for (int64_t b = 0; b < 4; ++b) {
    std::vector<float> cell(static_cast<size_t>(N));
    for (int64_t p = 0; p < N; ++p) {
      const float first = v[static_cast<size_t>(b * HW + g.row0(p) * g.width + g.col0(p))];
      cell[static_cast<size_t>(p)] = first;
      for (int64_t y = 0; y < g.patch_h; ++y)
        for (int64_t x = 0; x < g.patch_w; ++x)
          ASSERT_EQ(v[static_cast<size_t>(b * HW + (g.row0(p) + y) * g.width + g.col0(p) + x)], first)
              << "image " << b << " patch " << p;
    }
    EXPECT_EQ(*std::min_element(cell.begin(), cell.end()), 0.0f) << b;
    EXPECT_EQ(*std::max_element(cell.begin(), cell.end()), 1.0f) << b;
    const float* sb = s.data() + b * N;
    for (int64_t p = 0; p < N; ++p)
      for (int64_t q = 0; q < N; ++q) {
        if (sb[p] < sb[q]) {
          EXPECT_LT(cell[static_cast<size_t>(p)], cell[static_cast<size_t>(q)]) << b << " " << p << " " << q;
        }
        if (sb[p] == sb[q]) {
          EXPECT_EQ(cell[static_cast<size_t>(p)], cell[static_cast<size_t>(q)]) << b << " " << p << " " << q;
        }
      }
  }
}

TEST(Explain, IpsAttentionMap) {
  TempDir out;
  train::Trainer t(method_config("ips", out.path), true);
  check_attention_map(t);
}

TEST(Explain, AtsAttentionMap) {
  TempDir out;
  train::Trainer t(method_config("ats", out.path, "scale: 0.25\nn_patches: 4\n"), true);
  check_attention_map(t);
}

TEST(Explain, MethodsWithoutMapsSayItInOneLine) {
  for (const std::string method : {"first_m", "random_m"}) {
    TempDir out;
    train::Trainer t(method_config(method, out.path), true);
    EXPECT_TRUE(t.method().explanations().empty()) << method << " must not inherit IPS's attention map";
    train::Batch batch(t.source("train"), {0, 1}, Device::cpu(), false, 2);
    Generator gen(0);
    const std::string m = error_of([&] { t.method().explain(batch, "attention", "majority", {0, 1}, gen); });
    EXPECT_NE(m.find("method '" + method + "' has no explanation map 'attention' (it has none)"), std::string::npos)
        << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  TempDir out;
  train::Trainer t(method_config("ips", out.path), true);
  train::Batch batch(t.source("train"), {0, 1}, Device::cpu(), false, 2);
  Generator gen(0);
  const std::string m = error_of([&] { t.method().explain(batch, "gradcam", "majority", {0, 1}, gen); });
  EXPECT_NE(m.find("method 'ips' has no explanation map 'gradcam' (it has: attention)"), std::string::npos) << m;
  EXPECT_NE(error_of([&] { t.method().explain(batch, "attention", "majority", {0}, gen); })
                .find("explain: 1 classes given for 2 images"),
            std::string::npos);
}

}  // namespace
}  // namespace ipsnet
