// Sequential: children "0", "1", ... applied in order.
#pragma once
#include <initializer_list>
#include <memory>
#include <vector>

#include "layers/module.h"

namespace ipsnet {

/// PyTorch's nn.Sequential: each child's single-tensor forward in order.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  explicit Sequential(const std::vector<std::shared_ptr<Module>>& modules);
  /// Appends a module named by its position and returns it typed.
  template <typename M>
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(modules_.size()), m);
    modules_.push_back(m);
    return m;
  }
  /// x: the first module's input -> the last module's output
  Tensor forward(const Tensor& x) override;
  size_t size() const { return modules_.size(); }
  const std::shared_ptr<Module>& operator[](size_t i) const { return modules_.at(i); }

 private:
  std::vector<std::shared_ptr<Module>> modules_;
};

}  // namespace ipsnet
