#include "train/methods/heads.h"

namespace ipsnet {
namespace train {

TaskHeads make_task_heads(const std::vector<TaskConfig>& tasks, int64_t in, Generator& gen) {
  TaskHeads h;
  h.tasks = tasks;
  h.module = std::make_shared<Module>("ModuleDict");
  for (const TaskConfig& t : tasks) {
    IPSNET_CHECK(h.linear.count(t.name) == 0, "duplicate task name '", t.name, "'");
    auto seq = std::make_shared<Sequential>();
    h.linear[t.name] = seq->push_back(std::make_shared<Linear>(LinearOptions(in, t.n_class), gen));
    h.module->register_module(t.name, seq);
  }
  return h;
}

std::map<std::string, Tensor> apply_heads(const TaskHeads& heads, const Tensor& x) {
  std::map<std::string, Tensor> out;
  for (const TaskConfig& t : heads.tasks) out[t.name] = heads.linear.at(t.name)->forward(x);
  return out;
}

Tensor mean_task_loss(const TaskHeads& heads, const std::map<std::string, Tensor>& logits,
                      const std::map<std::string, Tensor>& targets, std::map<std::string, double>* parts) {
  Tensor total;
  for (const TaskConfig& t : heads.tasks) {
    auto l = logits.find(t.name);
    auto y = targets.find(t.name);
    IPSNET_CHECK(l != logits.end() && y != targets.end(), "loss: no logits or target for task '", t.name, "'");
    Tensor li;
    if (t.act_fn == "sigmoid") {
      IPSNET_CHECK(y->second.shape() == l->second.shape(), "loss: task '", t.name, "' target ",
                   shape_str(y->second.shape()), " vs logits ", shape_str(l->second.shape()));
      li = ops::binary_cross_entropy_with_logits(l->second, y->second.to(l->second.dtype()));
    } else {
      li = ops::cross_entropy(l->second, y->second);
    }
    if (parts) (*parts)[t.name] = li.item();
    total = total.defined() ? total + li : li;
  }
  return total / static_cast<double>(heads.tasks.size());
}

}  // namespace train
}  // namespace ipsnet
