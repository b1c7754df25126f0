// The per-task heads and losses shared by the methods that are not IPS
// (cnn, ats), named and computed as IPSNet does (SPEC section 2): one
// Linear(in, n_class) per task at `output_layers.<task>.0.{weight,bias}`;
// softmax tasks: cross_entropy, sigmoid tasks: BCE with logits; the total is
// the mean over tasks.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "layers/layers.h"
#include "train/config.h"

namespace ipsnet {
namespace train {

struct TaskHeads {
  std::shared_ptr<Module> module;                          // register it as "output_layers"
  std::map<std::string, std::shared_ptr<Linear>> linear;   // task -> its Linear
  std::vector<TaskConfig> tasks;
};

/// One Linear(in, n_class) per task, drawn from gen in task order.
TaskHeads make_task_heads(const std::vector<TaskConfig>& tasks, int64_t in, Generator& gen);
/// x: (B, in) -> task -> logits (B, n_class)
std::map<std::string, Tensor> apply_heads(const TaskHeads& heads, const Tensor& x);
/// The mean task loss; parts (optional) gets each task's loss by name.
/// targets: task -> (B) int64 (softmax) or (B, n_class) float (sigmoid).
Tensor mean_task_loss(const TaskHeads& heads, const std::map<std::string, Tensor>& logits,
                      const std::map<std::string, Tensor>& targets, std::map<std::string, double>* parts);

}  // namespace train
}  // namespace ipsnet
