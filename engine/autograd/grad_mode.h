// Thread-local gradient recording switch.
#pragma once

namespace ipsnet {

class TensorImpl;

/// True when operations record autograd history (the default).
bool grad_enabled();
void set_grad_enabled(bool on);

/// RAII: nothing is recorded while a NoGradGuard lives on this thread.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

/// Thread-local switch for bfloat16 inference convolutions: while a
/// ConvBf16Guard(true) lives, convolutions that record nothing for backward
/// (float32, e.g. the IPS selection pass) run with bfloat16 inputs and weights
/// and float32 accumulation and output, on backends that support it
/// (Backend::supports_bf16_conv: the CPU with AVX512-BF16, CUDA devices of
/// compute capability 8.0 or newer); elsewhere float32.
bool conv_bf16_enabled();
class ConvBf16Guard {
 public:
  explicit ConvBf16Guard(bool on);
  ~ConvBf16Guard();
  ConvBf16Guard(const ConvBf16Guard&) = delete;
  ConvBf16Guard& operator=(const ConvBf16Guard&) = delete;

 private:
  bool prev_;
};

/// Thread-local mixed-precision switch of the training pass (config key
/// 'precision: bf16'): while a PrecisionGuard(true) lives on this thread,
/// float32 convolutions (forward, backward-data, backward-weights) and matrix
/// products (matmul, linear) run with bfloat16 inputs and weights, float32
/// accumulation and float32 outputs, on backends that support it
/// (Backend::supports_bf16_conv); everything else stays float32. Each op's
/// backward node records the mode at forward time and honours it, whatever
/// the switch says when backward runs.
inline bool& precision_bf16_flag() {
  thread_local bool on = false;
  return on;
}
inline bool precision_bf16_enabled() { return precision_bf16_flag(); }
class PrecisionGuard {
 public:
  explicit PrecisionGuard(bool bf16) : prev_(precision_bf16_flag()) { precision_bf16_flag() = bf16; }
  ~PrecisionGuard() { precision_bf16_flag() = prev_; }
  PrecisionGuard(const PrecisionGuard&) = delete;
  PrecisionGuard& operator=(const PrecisionGuard&) = delete;

 private:
  bool prev_;
};

/// Thread-local observer of finished leaf gradients: while a
/// GradReadyHookGuard lives on this thread, backward calls hook->ready(leaf)
/// once per leaf and backward, right after that leaf's gradient has been
/// accumulated into its .grad (no later node of that backward adds to it).
/// Data-parallel training uses it to start reducing a bucket of gradients
/// while the rest of backward still runs (dist/reducer.h).
struct GradReadyHook {
  virtual ~GradReadyHook() = default;
  virtual void ready(TensorImpl* leaf) = 0;
};
GradReadyHook* grad_ready_hook();
class GradReadyHookGuard {
 public:
  explicit GradReadyHookGuard(GradReadyHook* hook);
  ~GradReadyHookGuard();
  GradReadyHookGuard(const GradReadyHookGuard&) = delete;
  GradReadyHookGuard& operator=(const GradReadyHookGuard&) = delete;

 private:
  GradReadyHook* prev_;
};

}  // namespace ipsnet
