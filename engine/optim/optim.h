// Optimizers and learning-rate schedules.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor/tensor.h"

namespace ipsnet {

/// What the trainer steps (config key `optimizer`: adamw | adam | sgd). State
/// tensors are named "<param>.<slot>" and saved in checkpoints with the step count.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update of every parameter that has a gradient; lr as given.
  virtual void step(double lr) = 0;
  virtual void zero_grad() = 0;
  virtual int64_t step_count() const = 0;
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t step) = 0;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  /// Exclude 1-D parameters (norm weights, biases) from weight decay (the
  /// reference decays all parameters: false).
  bool exclude_norm_and_bias = false;
  /// false: Adam with L2 regularisation as torch.optim.Adam (weight_decay * p
  /// added to the gradient before the moments); the same update as AdamW when
  /// weight_decay is 0.
  bool decoupled = true;
};

/// AdamW (decoupled weight decay) exactly as torch.optim.AdamW, fused per
/// parameter in the backend (engine/math/rows.h adamw_element); with
/// decoupled = false, torch.optim.Adam.
class AdamW : public Optimizer {
 public:
  /// params: (name, tensor) pairs; names key the state in checkpoints.
  AdamW(std::vector<std::pair<std::string, Tensor>> params, AdamWOptions opt);
  /// One update of every parameter that has a gradient; lr as given.
  void step(double lr) override;
  void zero_grad() override;
  int64_t step_count() const override { return step_; }
  const AdamWOptions& options() const { return opt_; }
  /// State tensors named "<param>.exp_avg" / "<param>.exp_avg_sq" plus the step count.
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t step) override;

 private:
  struct Slot {
    std::string name;
    Tensor param;  // shares storage with the module's parameter
    Tensor m, v;   // same shape/device
    bool decay;
  };
  std::vector<Slot> slots_;
  AdamWOptions opt_;
  int64_t step_ = 0;
};

struct SGDOptions {
  double momentum = 0.0;      // in [0, 1); 0: plain gradient descent
  double weight_decay = 0.0;  // L2: weight_decay * p added to the gradient
  bool exclude_norm_and_bias = false;
};

/// Stochastic gradient descent with (heavy-ball) momentum exactly as
/// torch.optim.SGD without dampening or Nesterov:
///   d = g + weight_decay * p;  buf = momentum * buf + d  (buf = d at the first step);
///   p = p - lr * buf.
/// With a constant rate this is Keras's SGD(momentum) (v = momentum v - lr g,
/// p += v, v = -lr buf); when the rate changes, Keras's velocity keeps the old
/// rate's steps and this buffer does not.
class SGD : public Optimizer {
 public:
  SGD(std::vector<std::pair<std::string, Tensor>> params, SGDOptions opt);
  void step(double lr) override;
  void zero_grad() override;
  int64_t step_count() const override { return step_; }
  /// State tensors named "<param>.momentum_buffer" (none when momentum is 0).
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t step) override;

 private:
  struct Slot {
    std::string name;
    Tensor param;
    Tensor buf;  // momentum buffer, same shape/device (undefined when momentum is 0)
    bool decay;
  };
  std::vector<Slot> slots_;
  SGDOptions opt_;
  int64_t step_ = 0;
};

/// Sum of squares of all gradients, then scales them so the global L2 norm is
/// at most max_norm (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

/// Linear warm-up from 0 (step 0) towards base_lr over warmup_steps, then cosine
/// decay from base_lr to final_factor * base_lr at total_steps - 1 (SPEC section 3;
/// the reference's MAE-style schedule, evaluated per optimizer step).
double warmup_cosine_lr(double base_lr, int64_t step, int64_t warmup_steps, int64_t total_steps,
                        double final_factor = 1e-3);

}  // namespace ipsnet
