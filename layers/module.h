// Module: the base of every layer and model (PyTorch C++ frontend style).
//
// A module owns named parameters (trainable leaf tensors), named buffers
// (state such as BatchNorm running statistics) and named child modules, all
// kept in registration order. Dotted names ("layer1.0.conv1.weight") and the
// state_dict order (per module: own parameters, own buffers, then children
// depth-first) match PyTorch, so checkpoints move between ipsnet and PyTorch
// with no renaming table.
//
// Layers keep Tensor handles to their parameters (copies of the handles in the
// registry, sharing one TensorImpl). Everything that changes a parameter --
// load_state_dict, to(Device), to(DType) -- updates the shared TensorImpl in
// place, so those handles stay valid.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/engine.h"

/// Declares an option `name` of type T with a chaining setter `name(v)` and a
/// getter `name()` (the PyTorch C++ frontend's TORCH_ARG). Usage:
/// `IPSNET_ARG(bool, bias) = true;`
#define IPSNET_ARG(T, name)                  \
 public:                                     \
  auto& name(const T& v) {                   \
    name##_ = v;                             \
    return *this;                            \
  }                                          \
  const T& name() const { return name##_; }  \
                                             \
 private:                                    \
  T name##_

namespace ipsnet {

/// Insertion-ordered map name -> Tensor (the order of a PyTorch state_dict).
class TensorDict {
 public:
  using Item = std::pair<std::string, Tensor>;
  /// Inserts or replaces (a replaced entry keeps its position).
  void insert(const std::string& name, const Tensor& t);
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  /// Throws naming the key when absent.
  const Tensor& at(const std::string& name) const;
  Tensor& at(const std::string& name);
  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  std::vector<std::string> keys() const;
  std::vector<Item>::const_iterator begin() const { return items_.begin(); }
  std::vector<Item>::const_iterator end() const { return items_.end(); }
  const std::vector<Item>& items() const { return items_; }

 private:
  std::vector<Item> items_;
  std::unordered_map<std::string, size_t> index_;
};

/// What a non-strict load_state_dict skipped.
struct LoadResult {
  std::vector<std::string> missing_keys;     // in the module, not in the checkpoint
  std::vector<std::string> unexpected_keys;  // in the checkpoint, not in the module
  std::vector<std::string> defaulted_keys;   // BatchNorm num_batches_tracked absent: set to 0
};

class Module {
 public:
  explicit Module(std::string type_name = "Module") : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The class name ("Linear", "ResNet", ...), used in messages.
  const std::string& type_name() const { return type_name_; }

  /// Single-tensor forward. Modules with another signature leave this
  /// default, which throws naming the module type.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // ---- registration -------------------------------------------------------
  /// Registers a trainable parameter (a floating leaf; requires_grad is set)
  /// and returns the stored handle.
  Tensor& register_parameter(const std::string& name, Tensor t, bool requires_grad = true);
  /// Registers a buffer (saved in state_dict, never trained).
  Tensor& register_buffer(const std::string& name, Tensor t);
  /// Registers a child module and returns it with its own type.
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    register_module_impl(name, m);
    return m;
  }

  // ---- introspection ------------------------------------------------------
  /// All parameters, recursively, with dotted names, in registration order.
  TensorDict named_parameters(bool recurse = true) const;
  /// All buffers, recursively, with dotted names.
  TensorDict named_buffers(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  /// Direct children in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const {
    return children_;
  }
  /// A direct child by name (throws when absent).
  std::shared_ptr<Module> child(const std::string& name) const;
  /// Total number of parameter elements.
  int64_t num_parameters() const;

  // ---- modes ----------------------------------------------------------------
  /// Sets training mode on this module and every descendant.
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  /// requires_grad off (freeze) / on (unfreeze) for all own and descendant parameters.
  void freeze();
  void unfreeze();
  /// Drops the accumulated gradient of every parameter.
  void zero_grad();

  // ---- device and dtype ---------------------------------------------------
  /// Moves every parameter, its gradient and every buffer to `device`, in place
  /// (existing Tensor handles to them see the move).
  void to(Device device);
  /// Converts every floating parameter and buffer to `dtype` (Float32 or
  /// Float64), in place; int64 buffers stay int64.
  void to(DType dtype);

  // ---- checkpoints --------------------------------------------------------
  /// Parameters and buffers (detached, sharing storage), PyTorch state_dict order.
  TensorDict state_dict() const;
  /// Copies the checkpoint's values into this module's tensors (any dtype is
  /// converted). Shape mismatches always throw; with `strict`, missing and
  /// unexpected names throw too. One message lists every problem by name.
  /// Nothing is modified when it throws.
  LoadResult load_state_dict(const TensorDict& state, bool strict = true);
  LoadResult load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

 protected:
  void register_module_impl(const std::string& name, std::shared_ptr<Module> m);
  bool training_ = true;

 private:
  void collect(const std::string& prefix, bool params, bool buffers, bool recurse, TensorDict* out) const;
  void check_new_name(const std::string& name, const char* what) const;

  std::string type_name_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

/// Replaces the contents of `dst`'s TensorImpl (storage, shape, strides,
/// dtype) with those of `src`, keeping dst's autograd flags: every handle
/// sharing dst's TensorImpl sees src's data. Used by Module::to.
void rebind_tensor(const Tensor& dst, const Tensor& src);

}  // namespace ipsnet
