// Train/eval mode for a scope: set on entry, the previous mode restored on
// every exit path (return or exception).
#pragma once
#include "layers/module.h"

namespace ipsnet {

class TrainModeGuard {
 public:
  TrainModeGuard(Module& m, bool training) : m_(m), was_(m.is_training()) { m_.train(training); }
  ~TrainModeGuard() { m_.train(was_); }
  TrainModeGuard(const TrainModeGuard&) = delete;
  TrainModeGuard& operator=(const TrainModeGuard&) = delete;

 private:
  Module& m_;
  bool was_;
};

}  // namespace ipsnet
