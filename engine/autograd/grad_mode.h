// Thread-local gradient recording switch.
#pragma once

namespace ipsnet {

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

}  // namespace ipsnet
