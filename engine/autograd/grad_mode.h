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

}  // namespace ipsnet
