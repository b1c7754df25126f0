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
/// (Backend::supports_bf16_conv: the CPU with AVX512-BF16); elsewhere float32.
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
