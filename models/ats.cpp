#include "models/ats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/autograd/node.h"
#include "layers/init.h"

namespace ipsnet {

void glorot_uniform_(Tensor& weight, Generator& gen) {
  NoGradGuard ng;
  const auto [fan_in, fan_out] = init::fans(weight.shape());
  const double l = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  weight.copy_(init::uniform(weight.shape(), gen, -l, l, weight.dtype()).to(weight.device()));
}

namespace ats {
namespace {

// (n, n) strictly lower (lower = true: L[i][j] = 1 for j < i) or strictly
// upper (L^T) triangular ones: exclusive cumulative sums as products.
Tensor triangle(int64_t n, bool lower, const Tensor& like) {
  std::vector<double> v(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      if (lower ? j < i : i < j) v[static_cast<size_t>(i * n + j)] = 1.0;
  return Tensor::from_vector(v, {n, n}).to(like.dtype()).to(like.device());
}
// a (B, n) -> (B, n): sum_{j<i} a_j
Tensor cumsum_excl2(const Tensor& a) { return ops::matmul(a, triangle(a.size(1), false, a)); }
// f (B, n, D) -> (B, n, D): sum_{j<i} f_j
Tensor cumsum_excl3(const Tensor& f) { return ops::matmul(triangle(f.size(1), true, f), f); }
// (1, n, 1) with value i at i (rev: n-1-i).
Tensor ramp(int64_t n, bool rev, const Tensor& like) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<double>(rev ? n - 1 - i : i);
  return Tensor::from_vector(v, {1, n, 1}).to(like.dtype()).to(like.device());
}

struct Estimate {
  Tensor F;     // (B, D)
  Tensor pm;    // (B, n) without replacement
  Tensor Fest;  // (B, n, D) without replacement
};

Estimate estimate(const Tensor& a, const Tensor& f, bool replace) {
  const double w = 1.0 / static_cast<double>(a.size(1));
  Estimate e;
  if (replace) {
    e.F = ops::sum(f, {1}) * w;
    return e;
  }
  e.pm = ops::rsub(cumsum_excl2(a), 1.0);
  e.Fest = cumsum_excl3(a.unsqueeze(2) * f) + e.pm.unsqueeze(2) * f;
  e.F = ops::sum(e.Fest, {1}) * w;
  return e;
}

// The original's gradients (ats/core/expectation.py); docs/ats.md.
struct ExpectedBackward : Node {
  SavedTensor a, f;
  bool replace = false;
  const char* name() const override { return "ATSExpectedBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    NoGradGuard ng;
    Tensor aa = a.unpack(name()), ff = f.unpack(name());
    const int64_t B = ff.size(0), n = ff.size(1), D = ff.size(2);
    const double w = 1.0 / static_cast<double>(n);
    Tensor gu = g.unsqueeze(1);  // (B, 1, D)
    Tensor ga, gf;
    if (replace) {
      ga = ops::sum(gu * ff, {2}) * w / aa;
      gf = (gu * w).expand({B, n, D}).contiguous();
      return {ga, gf};
    }
    Estimate e = estimate(aa, ff, false);
    Tensor probs = aa / e.pm;                                        // a_i / pm_i
    Tensor ga1 = e.Fest / probs.unsqueeze(2);                        // F_i pm_i / a_i
    Tensor ga2 = cumsum_excl3(ff) - ramp(n, false, ff) * ff;         // sum_{j<i} f_j - i f_i
    ga = ops::sum(gu * (ga1 + ga2), {2}) * w;
    Tensor coef = e.pm + ramp(n, true, ff).squeeze(2) * aa;          // pm_i + (n-1-i) a_i
    gf = coef.unsqueeze(2) * gu * w;
    return {ga, gf};
  }
  void release() override {
    a.reset();
    f.reset();
  }
};

}  // namespace

Tensor expected(const Tensor& attention, const Tensor& features, bool replace) {
  check_defined(attention, "ats::expected", "attention");
  check_defined(features, "ats::expected", "features");
  IPSNET_CHECK(attention.dim() == 2 && features.dim() == 3 && attention.size(0) == features.size(0) &&
                   attention.size(1) == features.size(1) && attention.size(1) >= 1,
               "ats::expected: attention ", shape_str(attention.shape()), " and features ",
               shape_str(features.shape()), " must be (B, n) and (B, n, D)");
  ops::check_same(attention, features, "ats::expected");
  Tensor a = attention.detach().contiguous(), f = features.detach().contiguous();
  Tensor out;
  {
    NoGradGuard ng;
    out = estimate(a, f, replace).F.contiguous();
  }
  if (any_requires_grad({&attention, &features})) {
    auto node = std::make_shared<ExpectedBackward>();
    node->a = SavedTensor(a);
    node->f = SavedTensor(f);
    node->replace = replace;
    set_history(out, node, {attention, features});
  }
  return out;
}

namespace {
std::vector<double> rows_of(const Tensor& attention, const char* op) {
  IPSNET_CHECK(attention.dim() == 2, op, ": attention ", shape_str(attention.shape()), " must be (B, K)");
  return attention.detach().to(Device::cpu()).to(DType::Float64).contiguous().to_vector<double>();
}
}  // namespace

Tensor sample(const Tensor& attention, int64_t n, bool replace, Generator& gen) {
  std::vector<double> a = rows_of(attention, "ats::sample");
  const int64_t B = attention.size(0), K = attention.size(1);
  IPSNET_CHECK(n >= 1, "ats::sample: n_patches ", n, " must be >= 1");
  IPSNET_CHECK(replace || n <= K, "ats::sample: n_patches ", n, " is larger than the ", K,
               " positions of the attention (sampling without replacement)");
  std::vector<int64_t> out(static_cast<size_t>(B * n));
  std::vector<double> key(static_cast<size_t>(K));
  std::vector<int64_t> order(static_cast<size_t>(K));
  for (int64_t b = 0; b < B; ++b) {
    const double* row = a.data() + b * K;
    int64_t* dst = out.data() + b * n;
    if (replace) {
      std::vector<double> cdf(static_cast<size_t>(K));
      std::partial_sum(row, row + K, cdf.begin());
      for (int64_t i = 0; i < n; ++i) {
        const double u = gen.uniform() * cdf.back();
        int64_t k = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
        while (k > 0 && (k >= K || row[k] <= 0)) --k;  // never a zero-probability position or past the end
        dst[i] = k;
      }
      continue;
    }
    // Gumbel top-k: log a + G, G = -log(-log u), is a draw of the order in
    // which sequential sampling without replacement picks the positions.
    for (int64_t k = 0; k < K; ++k) {
      const double u = gen.uniform();
      key[static_cast<size_t>(k)] = std::log(row[k]) - std::log(-std::log(u));
    }
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int64_t x, int64_t y) {
      return key[static_cast<size_t>(x)] > key[static_cast<size_t>(y)] ||
             (key[static_cast<size_t>(x)] == key[static_cast<size_t>(y)] && x < y);
    });
    std::copy(order.begin(), order.begin() + n, dst);
  }
  return Tensor::from_vector(out, {B, n});
}

Tensor top_positions(const Tensor& attention, int64_t n) {
  std::vector<double> a = rows_of(attention, "ats::top_positions");
  const int64_t B = attention.size(0), K = attention.size(1);
  IPSNET_CHECK(n >= 1 && n <= K, "ats::top_positions: n_patches ", n, " must be in [1, ", K, "]");
  std::vector<int64_t> out(static_cast<size_t>(B * n)), order(static_cast<size_t>(K));
  for (int64_t b = 0; b < B; ++b) {
    const double* row = a.data() + b * K;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + n, order.end(),
                      [&](int64_t x, int64_t y) { return row[x] > row[y] || (row[x] == row[y] && x < y); });
    std::copy(order.begin(), order.begin() + n, out.begin() + b * n);
  }
  return Tensor::from_vector(out, {B, n});
}

Tensor entropy_regularizer(const Tensor& attention, double strength) {
  const double B = static_cast<double>(attention.size(0));
  return ops::sum(attention * ops::log(attention + 1e-6)) * (strength / B);
}

std::vector<std::pair<int64_t, int64_t>> patch_corners(const std::vector<int64_t>& pos, int64_t h, int64_t w,
                                                       int64_t H, int64_t W, int64_t p) {
  // float32 as the original (TensorFlow): scale = H/h, space = h*scale, step = space/h.
  auto step_of = [](int64_t lo, int64_t hi) {
    const float scale = static_cast<float>(hi) / static_cast<float>(lo);
    const float space = static_cast<float>(lo) * scale;
    return space / static_cast<float>(lo);
  };
  const float sr = step_of(h, H), sc = step_of(w, W), half = static_cast<float>(p) / 2.0f;
  std::vector<std::pair<int64_t, int64_t>> out;
  out.reserve(pos.size());
  for (int64_t s : pos) {
    IPSNET_CHECK(s >= 0 && s < h * w, "ats::patch_corners: position ", s, " outside the ", h, "x", w, " view");
    float r = static_cast<float>(s / w) * sr;
    r = r + sr / 2.0f;
    r = r - half;
    float c = static_cast<float>(s % w) * sc;
    c = c + sc / 2.0f;
    c = c - half;
    out.emplace_back(static_cast<int64_t>(std::nearbyint(r)), static_cast<int64_t>(std::nearbyint(c)));
  }
  return out;
}

std::vector<int64_t> grid_cells(const std::vector<int64_t>& pos, int64_t h, int64_t w, const PatchGrid& grid) {
  const double sr = static_cast<double>(grid.height) / static_cast<double>(h);
  const double sc = static_cast<double>(grid.width) / static_cast<double>(w);
  std::vector<int64_t> out;
  out.reserve(pos.size());
  for (int64_t s : pos) {
    IPSNET_CHECK(s >= 0 && s < h * w, "ats::grid_cells: position ", s, " outside the ", h, "x", w, " view");
    const double yr = static_cast<double>(s / w) * sr + sr / 2, xc = static_cast<double>(s % w) * sc + sc / 2;
    const int64_t r = std::min<int64_t>(grid.rows() - 1, static_cast<int64_t>(yr / static_cast<double>(grid.stride_h)));
    const int64_t c = std::min<int64_t>(grid.cols() - 1, static_cast<int64_t>(xc / static_cast<double>(grid.stride_w)));
    out.push_back(r * grid.cols() + c);
  }
  return out;
}

}  // namespace ats

namespace {
class Tanh : public Module {
 public:
  Tanh() : Module("Tanh") {}
  Tensor forward(const Tensor& x) override { return ops::tanh(x); }
};
}  // namespace

ATSNet::ATSNet(const ATSNetOptions& o, Generator& gen) : Module("ATSNet"), options_(o) {
  const int64_t C = o.in_channels();
  attention_ = register_module("attention", std::make_shared<Sequential>());
  std::vector<std::shared_ptr<Conv2d>> convs;
  convs.push_back(attention_->push_back(std::make_shared<Conv2d>(Conv2dOptions(C, 8, 3).padding(1), gen)));
  attention_->push_back(std::make_shared<Tanh>());
  convs.push_back(attention_->push_back(std::make_shared<Conv2d>(Conv2dOptions(8, 8, 3).padding(1), gen)));
  attention_->push_back(std::make_shared<Tanh>());
  convs.push_back(attention_->push_back(std::make_shared<Conv2d>(Conv2dOptions(8, 1, 3).padding(1), gen)));
  if (o.features() == "ats") {
    auto seq = std::make_shared<Sequential>();
    convs.push_back(seq->push_back(std::make_shared<Conv2d>(Conv2dOptions(C, 32, 7), gen)));
    seq->push_back(std::make_shared<ReLU>());
    for (int k = 0; k < 3; ++k) {
      convs.push_back(seq->push_back(std::make_shared<Conv2d>(Conv2dOptions(32, 32, 3), gen)));
      seq->push_back(std::make_shared<ReLU>());
    }
    feature_ = register_module("feature", seq);
    feature_dim_ = 32;
  } else {
    const int depth = o.features() == "resnet18" ? 18 : o.features() == "resnet34" ? 34
                                                   : o.features() == "resnet50" ? 50 : 0;
    IPSNET_CHECK(depth != 0, "ATSNet: unknown feature network '", o.features(),
                 "' (expected ats, resnet18, resnet34 or resnet50)");
    auto r = std::make_shared<ResNet>(ResNetOptions().depth(depth).in_channels(C).n_res_blocks(o.n_res_blocks()), gen);
    feature_dim_ = r->out_channels();
    feature_ = register_module("feature", r);
    resnet_ = true;
  }
  if (o.keras_init()) {
    NoGradGuard ng;
    for (auto& c : convs) {
      glorot_uniform_(c->weight_, gen);
      c->bias_.copy_(Tensor::zeros(c->bias_.shape(), c->bias_.dtype()).to(c->bias_.device()));
    }
  }
}

Tensor ATSNet::attention(const Tensor& x_low) {
  IPSNET_CHECK(x_low.dim() == 4 && x_low.size(1) == options_.in_channels(), "ATSNet::attention: x_low ",
               shape_str(x_low.shape()), " must be (B, ", options_.in_channels(), ", h, w)");
  Tensor logits = attention_->forward(x_low);  // (B, 1, h, w)
  const int64_t B = logits.size(0), K = logits.size(2) * logits.size(3);
  Tensor a = ops::softmax(logits.reshape({B, K}), -1);
  return a * (1.0 - ats::kSmooth) + ats::kSmooth / static_cast<double>(K);
}

Tensor ATSNet::features(const Tensor& patches) {
  Tensor f = feature_->forward(patches);                        // ResNet: (m, D) pooled
  if (!resnet_) f = ops::amax(f, {2, 3});                       // global max pool: (m, 32)
  Tensor norm = ops::sqrt(ops::clamp_min(ops::sum(f * f, {1}, true), 1e-12));  // Keras l2_normalize
  return f / norm;
}

}  // namespace ipsnet
