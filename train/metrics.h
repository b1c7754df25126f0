// Task metrics of SPEC section 3.
#pragma once
#include <vector>

#include "engine/tensor/tensor.h"

namespace ipsnet {
namespace train {

/// probs: (n, C) CPU float; target: (n) int64 -> fraction with argmax == target.
double accuracy(const Tensor& probs, const Tensor& target);
/// probs, target: (n, C) -> fraction of rows where every (p > 0.5) == target.
double multilabel_accuracy(const Tensor& probs, const Tensor& target);
/// ROC AUC of scores against binary labels (ties count one half). NaN when one class is absent.
double roc_auc(const std::vector<double>& scores, const std::vector<int>& labels);
/// Dispatch by name: accuracy | multilabel_accuracy | auc. For auc, a single
/// column is the positive score; two columns use column 1.
double compute_metric(const std::string& name, const Tensor& probs, const Tensor& target);

}  // namespace train
}  // namespace ipsnet
