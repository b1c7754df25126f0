// Helpers for the PyTorch golden fixtures (tests/fixtures/make_golden.py).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>

#include "layers/module.h"
#include "models/safetensors.h"

namespace ipsnet {
namespace golden {

inline std::string fixture(const std::string& name) { return std::string(IPSNET_FIXTURES_DIR) + "/golden/" + name; }

inline uint32_t fnv1a32(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

/// The fixture script's hashed_values: center + halfwidth * s, s in [-1, 1) from a murmur3 finaliser.
inline std::vector<float> hashed_values(const std::string& name, int64_t n, float center, float halfwidth) {
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t h = fnv1a32(name);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t x = static_cast<uint32_t>(i) * 0x9E3779B1u + h;
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    int64_t k = static_cast<int64_t>(x >> 8);
    float s = static_cast<float>(2 * k - (int64_t{1} << 24)) / static_cast<float>(1 << 24);
    v[static_cast<size_t>(i)] = center + halfwidth * s;
  }
  return v;
}

/// The fixture script's init_rule + fill_hashed: every parameter and floating buffer by its name.
inline void fill_hashed(Module& m) {
  NoGradGuard ng;
  for (const auto& it : m.state_dict()) {
    const std::string& name = it.first;
    Tensor t = it.second;
    std::string leaf = name.substr(name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1);
    if (leaf == "num_batches_tracked") continue;
    float c = 0, hw = 0;
    if (leaf == "running_var") c = 1, hw = 0.3f;
    else if (leaf == "running_mean") c = 0, hw = 0.1f;
    else if (leaf == "q") c = 0, hw = 2.0f;
    else if (t.dim() == 1) leaf == "weight" ? (c = 1, hw = 0.2f) : (c = 0, hw = 0.1f);
    else hw = static_cast<float>(std::sqrt(3.0 / static_cast<double>(t.numel() / t.size(0))));
    t.copy_(Tensor::from_vector<float>(hashed_values(name, t.numel(), c, hw), t.shape()));
  }
}

/// Per-tensor relative max error: max|a - b| / max(max|b|, 1e-12).
inline double rel_max_err(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to(DType::Float64).contiguous().to_vector<double>();
  std::vector<double> vb = b.to(DType::Float64).contiguous().to_vector<double>();
  double num = 0, den = 1e-12;
  for (size_t i = 0; i < va.size(); ++i) {
    num = std::max(num, std::fabs(va[i] - vb[i]));
    den = std::max(den, std::fabs(vb[i]));
  }
  return num / den;
}

/// Collects per-tensor errors; the failure message lists every tensor over tolerance.
class Comparer {
 public:
  explicit Comparer(double tol) : tol_(tol) {}
  void check(const std::string& name, const Tensor& got, const Tensor& want) {
    if (got.numel() != want.numel()) {
      bad_ << "\n  " << name << ": shape " << shape_str(got.shape()) << " vs golden " << shape_str(want.shape());
      ++n_bad_;
      return;
    }
    double e = rel_max_err(got, want);
    worst_ = std::max(worst_, e);
    if (e > worst_name_err_) worst_name_err_ = e, worst_name_ = name;
    ++n_;
    if (!(e <= tol_)) {
      bad_ << "\n  " << name << ": relative max error " << e;
      ++n_bad_;
    }
  }
  ::testing::AssertionResult result() const {
    if (n_bad_) return ::testing::AssertionFailure() << n_bad_ << " of " << n_ << " tensor(s) over " << tol_ << bad_.str();
    return ::testing::AssertionSuccess() << n_ << " tensors, worst " << worst_ << " (" << worst_name_ << ")";
  }
  double worst() const { return worst_; }
  const std::string& worst_name() const { return worst_name_; }

 private:
  double tol_;
  double worst_ = 0, worst_name_err_ = -1;
  std::string worst_name_;
  std::ostringstream bad_;
  int n_ = 0, n_bad_ = 0;
};

/// Compares a gradient with the fixture's grad.<name> (full) or gradsample.<name> plus gradnorm.<name>.
inline void check_grad(Comparer& c, const TensorDict& fx, const std::string& name, const Tensor& grad) {
  if (!grad.defined()) {
    c.check("grad." + name + " (undefined)", Tensor::zeros({1}), Tensor::ones({1}));
    return;
  }
  Tensor g = grad.to(DType::Float64).contiguous().reshape({-1});
  if (fx.contains("grad." + name)) {
    c.check("grad." + name, g, fx.at("grad." + name));
  } else {
    const Tensor& s = fx.at("gradsample." + name);
    int64_t n = g.numel(), k = s.numel();
    std::vector<double> gv = g.to_vector<double>(), pick;
    for (int64_t i = 0; i < k; ++i) pick.push_back(gv[static_cast<size_t>(i * n / k)]);
    c.check("gradsample." + name, Tensor::from_vector<double>(pick, {k}), s);
  }
  double norm = std::sqrt(ops::sum(ops::square(g)).item());
  c.check("gradnorm." + name, Tensor::scalar(norm, DType::Float64), fx.at("gradnorm." + name));
}

}  // namespace golden
}  // namespace ipsnet
