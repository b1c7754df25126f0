#include "train/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "engine/common/error.h"

namespace ipsnet {
namespace train {

double accuracy(const Tensor& probs, const Tensor& target) {
  const int64_t n = probs.size(0), C = probs.size(1);
  if (n == 0) return 0;
  std::vector<float> p = probs.to_vector<float>();
  std::vector<int64_t> t = target.to_vector<int64_t>();
  int64_t ok = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = p.data() + i * C;
    int64_t best = std::max_element(row, row + C) - row;
    ok += best == t[static_cast<size_t>(i)];
  }
  return static_cast<double>(ok) / static_cast<double>(n);
}

double multilabel_accuracy(const Tensor& probs, const Tensor& target) {
  const int64_t n = probs.size(0), C = probs.size(1);
  if (n == 0) return 0;
  std::vector<float> p = probs.to_vector<float>(), t = target.to_vector<float>();
  int64_t ok = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool all = true;
    for (int64_t c = 0; c < C && all; ++c) all = (p[static_cast<size_t>(i * C + c)] > 0.5f) == (t[static_cast<size_t>(i * C + c)] > 0.5f);
    ok += all;
  }
  return static_cast<double>(ok) / static_cast<double>(n);
}

double roc_auc(const std::vector<double>& scores, const std::vector<int>& labels) {
  const size_t n = scores.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Mann-Whitney U with average ranks for ties.
  double rank_sum = 0;
  int64_t pos = 0, neg = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && scores[order[j + 1]] == scores[order[i]]) ++j;
    double avg_rank = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
    for (size_t k = i; k <= j; ++k)
      if (labels[order[k]]) rank_sum += avg_rank;
    i = j + 1;
  }
  for (int l : labels) (l ? pos : neg)++;
  if (pos == 0 || neg == 0) return std::numeric_limits<double>::quiet_NaN();
  return (rank_sum - static_cast<double>(pos) * (pos + 1) / 2.0) / (static_cast<double>(pos) * static_cast<double>(neg));
}

double compute_metric(const std::string& name, const Tensor& probs, const Tensor& target) {
  if (name == "accuracy") return accuracy(probs, target);
  if (name == "multilabel_accuracy") return multilabel_accuracy(probs, target);
  if (name == "auc") {
    const int64_t n = probs.size(0), C = probs.size(1);
    IPSNET_CHECK(C == 1 || C == 2, "metric auc: needs a binary task (1 or 2 outputs), got ", C);
    std::vector<float> p = probs.to_vector<float>();
    std::vector<double> s(static_cast<size_t>(n));
    std::vector<int> l(static_cast<size_t>(n));
    std::vector<double> t = target.to(DType::Float64).to_vector<double>();
    for (int64_t i = 0; i < n; ++i) {
      s[static_cast<size_t>(i)] = p[static_cast<size_t>(i * C + (C - 1))];
      l[static_cast<size_t>(i)] = t[static_cast<size_t>(target.dim() == 2 ? i * target.size(1) + (target.size(1) - 1) : i)] > 0.5;
    }
    return roc_auc(s, l);
  }
  IPSNET_FAIL("unknown metric '", name, "' (expected accuracy, multilabel_accuracy or auc)");
}

}  // namespace train
}  // namespace ipsnet
