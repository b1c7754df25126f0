// Explanation maps: the pure parts (channel weights, maps, normalisation,
// spreading) and the Grad-CAM pass of the full-image CNN (train/explain.h).
#include "train/explain.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "data/resize.h"

namespace ipsnet {
namespace train {
namespace {

// (B, K, h, w) of a float tensor as doubles, checked.
std::vector<double> maps4(const Tensor& t, const char* what, int64_t* B, int64_t* K, int64_t* hw) {
  check_defined(t, "explain", what);
  IPSNET_CHECK(t.dim() == 4, "explain: ", what, " ", shape_str(t.shape()), " must be (B, K, h, w)");
  *B = t.size(0);
  *K = t.size(1);
  *hw = t.size(2) * t.size(3);
  return t.to(Device::cpu()).to(DType::Float64).contiguous().to_vector<double>();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += str_cat(s.empty() ? "" : ", ", x);
  return s;
}

// Restores grad mode on any exit.
class GradModeScope {
 public:
  explicit GradModeScope(bool on) : prev_(grad_enabled()) { set_grad_enabled(on); }
  ~GradModeScope() { set_grad_enabled(prev_); }
  GradModeScope(const GradModeScope&) = delete;
  GradModeScope& operator=(const GradModeScope&) = delete;

 private:
  bool prev_;
};

// Switches requires_grad off on a module's parameters, restores each on any exit.
class NoParamGradScope {
 public:
  explicit NoParamGradScope(Module& m) : params_(m.parameters()) {
    for (Tensor& p : params_) {
      was_.push_back(p.requires_grad());
      p.set_requires_grad(false);
    }
  }
  ~NoParamGradScope() {
    for (size_t i = 0; i < params_.size(); ++i) params_[i].set_requires_grad(was_[i]);
  }
  NoParamGradScope(const NoParamGradScope&) = delete;
  NoParamGradScope& operator=(const NoParamGradScope&) = delete;

 private:
  std::vector<Tensor> params_;
  std::vector<bool> was_;
};

}  // namespace

void check_explanation_kind(const std::string& method, const std::vector<std::string>& kinds,
                            const std::string& kind) {
  if (std::find(kinds.begin(), kinds.end(), kind) != kinds.end()) return;
  IPSNET_FAIL("method '", method, "' has no explanation map '", kind, "' ",
              kinds.empty() ? std::string("(it has none)") : str_cat("(it has: ", join(kinds), ")"));
}

Tensor gradcam_weights(const Tensor& grads) {
  int64_t B = 0, K = 0, hw = 0;
  const std::vector<double> g = maps4(grads, "gradients", &B, &K, &hw);
  std::vector<double> w(static_cast<size_t>(B * K), 0.0);
  // w[b,k] = mean_ij g[b,k,i,j]
  for (int64_t bk = 0; bk < B * K; ++bk) {
    double s = 0;
    for (int64_t i = 0; i < hw; ++i) s += g[static_cast<size_t>(bk * hw + i)];
    w[static_cast<size_t>(bk)] = s / static_cast<double>(hw);
  }
  return Tensor::from_vector(w, {B, K});
}

Tensor gradcam_pp_weights(const Tensor& acts, const Tensor& grads) {
  int64_t B = 0, K = 0, hw = 0, B2 = 0, K2 = 0, hw2 = 0;
  const std::vector<double> a = maps4(acts, "activations", &B, &K, &hw);
  const std::vector<double> g = maps4(grads, "gradients", &B2, &K2, &hw2);
  IPSNET_CHECK(acts.shape() == grads.shape(), "explain: activations ", shape_str(acts.shape()),
               " and gradients ", shape_str(grads.shape()), " differ in shape");
  std::vector<double> w(static_cast<size_t>(B * K), 0.0);
  for (int64_t bk = 0; bk < B * K; ++bk) {
    const double* A = a.data() + bk * hw;
    const double* G = g.data() + bk * hw;
    double sumA = 0;  // sum_ij A
    for (int64_t i = 0; i < hw; ++i) sumA += A[i];
    double s = 0;
    for (int64_t i = 0; i < hw; ++i) {
      if (G[i] == 0) continue;  // a_ij = 0 where g == 0
      const double g2 = G[i] * G[i], g3 = g2 * G[i];
      const double aij = g2 / (2 * g2 + sumA * g3 + 1e-6);  // pytorch-grad-cam's eps
      s += std::max(G[i], 0.0) * aij;                        // relu(g) a_ij
    }
    w[static_cast<size_t>(bk)] = s;
  }
  return Tensor::from_vector(w, {B, K});
}

Tensor weighted_cam(const Tensor& acts, const Tensor& weights, bool relu) {
  int64_t B = 0, K = 0, hw = 0;
  const std::vector<double> a = maps4(acts, "activations", &B, &K, &hw);
  check_defined(weights, "explain", "weights");
  IPSNET_CHECK(weights.dim() == 2 && weights.size(0) == B && weights.size(1) == K, "explain: weights ",
               shape_str(weights.shape()), " must be (", B, ", ", K, ")");
  const std::vector<double> w = weights.to(Device::cpu()).to(DType::Float64).contiguous().to_vector<double>();
  std::vector<double> cam(static_cast<size_t>(B * hw), 0.0);
  // cam[b,ij] = sum_k w[b,k] A[b,k,ij]  (then ReLU for the Grad-CAMs)
  for (int64_t b = 0; b < B; ++b) {
    double* c = cam.data() + b * hw;
    for (int64_t k = 0; k < K; ++k) {
      const double wk = w[static_cast<size_t>(b * K + k)];
      const double* A = a.data() + (b * K + k) * hw;
      for (int64_t i = 0; i < hw; ++i) c[i] += wk * A[i];
    }
    if (relu)
      for (int64_t i = 0; i < hw; ++i) c[i] = std::max(c[i], 0.0);
  }
  return Tensor::from_vector(cam, {B, acts.size(2), acts.size(3)});
}

Tensor scale_cam_image(const Tensor& cams, int64_t H, int64_t W) {
  check_defined(cams, "explain", "cams");
  IPSNET_CHECK(cams.dim() == 3, "explain: cams ", shape_str(cams.shape()), " must be (B, h, w)");
  IPSNET_CHECK(H >= 1 && W >= 1, "explain: output size ", H, "x", W, " must be at least 1x1");
  const int64_t B = cams.size(0), h = cams.size(1), w = cams.size(2);
  // float32 as the library (its cams are float32 numpy arrays).
  std::vector<float> c = cams.to(Device::cpu()).to(DType::Float32).contiguous().to_vector<float>();
  Tensor out = Tensor::empty({B, H, W});
  for (int64_t b = 0; b < B; ++b) {
    float* m = c.data() + b * h * w;
    // m' = (m - min) / (1e-7 + max(m - min))
    const float lo = *std::min_element(m, m + h * w);
    for (int64_t i = 0; i < h * w; ++i) m[i] -= lo;
    const float hi = *std::max_element(m, m + h * w);
    for (int64_t i = 0; i < h * w; ++i) m[i] = m[i] / (1e-7f + hi);
    data::resize_bilinear(m, h, w, out.data<float>() + b * H * W, H, W);
  }
  return out;
}

Tensor spread_scores(const Tensor& scores, const PatchGrid& grid) {
  check_defined(scores, "explain", "scores");
  const int64_t N = grid.count(), H = grid.height, W = grid.width;
  IPSNET_CHECK(scores.dim() == 2 && scores.size(1) == N, "explain: scores ", shape_str(scores.shape()),
               " must be (B, ", N, ") for the ", grid.rows(), "x", grid.cols(), " patch grid");
  const int64_t B = scores.size(0);
  const std::vector<double> s = scores.to(Device::cpu()).to(DType::Float64).contiguous().to_vector<double>();
  Tensor out = Tensor::empty({B, H, W});
  std::vector<double> m(static_cast<size_t>(H * W));
  constexpr double kNone = -std::numeric_limits<double>::infinity();
  for (int64_t b = 0; b < B; ++b) {
    const double* sb = s.data() + b * N;
    // m(y, x) = max over the patches p covering (y, x) of s_p
    std::fill(m.begin(), m.end(), kNone);
    for (int64_t p = 0; p < N; ++p) {
      const int64_t r0 = grid.row0(p), c0 = grid.col0(p);
      for (int64_t y = r0; y < r0 + grid.patch_h; ++y) {
        double* row = m.data() + y * W;
        for (int64_t x = c0; x < c0 + grid.patch_w; ++x) row[x] = std::max(row[x], sb[p]);
      }
    }
    // uncovered pixels: min_p s_p; then (m - min) / (max - min), all-equal -> 0
    const double smin = *std::min_element(sb, sb + N);
    for (double& v : m)
      if (v == kNone) v = smin;
    const auto [lo, hi] = std::minmax_element(m.begin(), m.end());
    const double low = *lo, range = *hi - *lo;
    float* o = out.data<float>() + b * H * W;
    for (int64_t i = 0; i < H * W; ++i)
      o[i] = range > 0 ? static_cast<float>((m[static_cast<size_t>(i)] - low) / range) : 0.0f;
  }
  return out;
}

Tensor cnn_explanation(ResNet& encoder, Linear& head, const Tensor& x, const std::string& kind,
                       const std::vector<int64_t>& classes, int64_t H, int64_t W) {
  check_defined(x, "explain", "x");
  const int64_t B = x.size(0), n_class = head.weight_.size(0);
  IPSNET_CHECK(static_cast<int64_t>(classes.size()) == B, "explain: ", classes.size(), " classes given for ", B,
               " images");
  for (int64_t c : classes)
    IPSNET_CHECK(c >= 0 && c < n_class, "explain: class ", c, " out of range for a head of ", n_class, " classes");
  IPSNET_CHECK(kind == "gradcam" || kind == "gradcam_pp" || kind == "cam", "explain: unknown map '", kind,
               "' (expected gradcam_pp, gradcam or cam)");
  Tensor A;
  {
    NoGradGuard ng;
    A = encoder.features(x);  // (B, K, h, w)
  }
  Tensor cam;
  if (kind == "cam") {
    // CAM: w[b,k] = W_head[classes[b], k]
    Tensor idx = Tensor::from_vector(classes, {B}).to(head.weight_.device());
    Tensor rows;
    {
      NoGradGuard ng;
      rows = ops::gather(head.weight_, 0, idx.unsqueeze(1).expand({B, head.weight_.size(1)}));
    }
    cam = weighted_cam(A, rows, /*relu=*/false);
  } else {
    Tensor grads;
    {
      GradModeScope grad_on(true);
      NoParamGradScope frozen_head(head);
      Tensor leaf = A.detach();
      leaf.set_requires_grad(true);
      Tensor logits = head.forward(ops::adaptive_avg_pool2d_1x1(leaf).flatten(1));  // (B, n_class)
      Tensor idx = Tensor::from_vector(classes, {B, 1}).to(logits.device());
      Tensor S = ops::sum(ops::gather(logits, 1, idx));  // sum_b logits[b, classes[b]]
      S.backward();
      grads = leaf.grad();
      IPSNET_CHECK(grads.defined(), "explain: no gradient reached the last stage's output");
    }
    Tensor w = kind == "gradcam" ? gradcam_weights(grads) : gradcam_pp_weights(A, grads);
    cam = weighted_cam(A, w, /*relu=*/true);
  }
  return scale_cam_image(cam, H, W);
}

}  // namespace train
}  // namespace ipsnet
