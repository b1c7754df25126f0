// Autograd graph nodes.
//
// Contract: Node::apply receives the gradient of the node's single output and
// returns one gradient per input (undefined where an input needs none).
// Gradients flowing into the same node are summed (=); gradients of leaves
// accumulate across backward calls (+=) in AccumulateGrad.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor/tensor.h"

namespace ipsnet {

class Node : public std::enable_shared_from_this<Node> {
 public:
  Node();
  virtual ~Node();
  virtual const char* name() const = 0;
  virtual std::vector<Tensor> apply(const Tensor& grad) = 0;
  /// What backward calls: the node owns the gradient and may drop it early
  /// to lower the backward peak (default: apply).
  virtual std::vector<Tensor> apply_owned(Tensor grad) { return apply(grad); }
  /// Drops saved tensors once backward has run (unless the graph is retained).
  virtual void release() {}
  /// One entry per input; null when that input needs no gradient.
  std::vector<std::shared_ptr<Node>> next_;
  bool released_ = false;
  /// Nodes alive in this process (a no-grad forward must leave this unchanged).
  static int64_t live_count();

 private:
  static std::atomic<int64_t> live_;
};

/// Accumulates into a leaf's .grad (+=).
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::weak_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  const char* name() const override { return "AccumulateGrad"; }
  std::vector<Tensor> apply(const Tensor& grad) override;

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

/// A recipe that recomputes an op's output from what it saved (activation
/// recomputation): run() returns a fresh tensor equal, bit for bit, to the
/// output at the time it was made (same primitives, same inputs).
class Recompute {
 public:
  virtual ~Recompute() = default;
  virtual Tensor run() const = 0;
};

/// Attaches a recipe to out's storage: a SavedTensor of out (or of a view of
/// its whole storage) then keeps the recipe and a weak reference instead of
/// the memory. out must be a fresh, contiguous op result.
void set_recompute(const Tensor& out, std::shared_ptr<const Recompute> recipe);

/// A tensor saved for backward, with the version it had when saved: unpacking
/// after an in-place change is an error, not a silent wrong gradient.
/// Saving a tensor whose storage carries a valid recipe (set_recompute) keeps
/// only the recipe: unpack returns the tensor while something else still
/// holds it, and otherwise recomputes it.
class SavedTensor {
 public:
  SavedTensor() = default;
  SavedTensor(const Tensor& t);  // NOLINT: implicit on purpose
  /// Saves t as a bfloat16 copy (precision: bf16; engine/tensor/bf16.h), for
  /// a backward that reads t only through bfloat16 products or its sign:
  /// unpack returns a fresh float32 tensor of the rounded values, alive only
  /// while the caller holds it. Applies when t is a float32 tensor on a device
  /// with bfloat16 storage that spans its whole contiguous storage and carries
  /// no valid recipe (a recipe is cheaper still); otherwise it is SavedTensor(t).
  /// Every save of the same storage at the same version shares one copy. The
  /// copy is taken now, so later in-place changes of t do not reach backward.
  static SavedTensor bf16(const Tensor& t);
  /// True when this holds a bfloat16 copy.
  bool is_bf16() const { return bf16_; }
  Tensor unpack(const char* node_name) const;
  /// The bfloat16 copy itself (DType::BFloat16, no widening) when this holds
  /// one, for a backward that hands it to a bfloat16 primitive as is;
  /// otherwise unpack().
  Tensor unpack_stored(const char* node_name) const;
  void reset() {
    t_ = Tensor();
    recipe_.reset();
    weak_.reset();
  }
  bool defined() const { return t_.defined() || recipe_ != nullptr; }
  /// True when this holds a recipe instead of the tensor.
  bool recomputed() const { return recipe_ != nullptr; }

 private:
  Tensor t_;
  uint64_t version_ = 0;
  std::shared_ptr<const Recompute> recipe_;
  std::weak_ptr<Storage> weak_;
  Shape shape_;
  DType dtype_ = DType::Float32;
  bool bf16_ = false;
};

struct AutogradMeta {
  bool requires_grad = false;
  Tensor grad;                          // leaves only
  std::shared_ptr<Node> grad_fn;        // non-leaves
  std::weak_ptr<Node> accumulator;      // leaves: their AccumulateGrad node
};

/// True when any defined input requires grad and grad mode is on.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);
/// The node an input's gradient flows to: grad_fn, a leaf's accumulator, or null.
std::shared_ptr<Node> gradient_edge(const Tensor& t);
/// Connects node to inputs and makes it out's grad_fn (out must be a fresh result).
void set_history(Tensor& out, const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs);

/// Runs backward from roots with the given output gradients.
void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

}  // namespace ipsnet
