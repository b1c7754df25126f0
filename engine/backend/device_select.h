// Device choice for every command (`--device auto|cpu|cuda[:N]`) and the
// backend-wide switches. The engine includes no CUDA header: the CUDA library,
// when linked, registers a probe that counts the usable devices and says why
// there are none.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor/dtype.h"

namespace ipsnet {

/// What the CUDA library found. count == 0 comes with a reason in why_none.
struct DeviceProbe {
  bool built = false;                 ///< a CUDA backend is linked into this binary
  int count = 0;                      ///< usable CUDA devices
  std::string why_none;               ///< "no CUDA driver (...)", "no device", ...
  std::vector<std::string> devices;   ///< one line per device: name, memory, compute capability
  std::vector<std::pair<std::string, std::string>> versions;  ///< ("cuDNN", "9.19.0 (built 9.19.0)"), ...
};

using DeviceProbeFn = DeviceProbe (*)();
/// Called once by the CUDA library at start-up.
void register_device_probe(DeviceProbeFn fn);
/// The probe result (run once, then cached). Without a CUDA backend:
/// built = false, count = 0 and a reason.
const DeviceProbe& probe_devices();

/// "auto" (CUDA device 0 when one is usable, else the CPU), "cpu", "cuda",
/// "cuda:N". Asking for CUDA where none is usable throws with the reason.
Device resolve_device(const std::string& spec);

/// Backend-wide switches (set from the command line before the first kernel).
struct BackendOptions {
  /// cuBLAS GEMM and cuDNN convolutions may use TF32 tensor cores (off: FP32 exact).
  bool allow_tf32 = false;
  /// Synchronise after every CUDA launch and name the failing kernel
  /// (also IPSNET_CUDA_SYNC=1 in the environment).
  bool cuda_sync = false;
  /// Upper bound on one cuDNN convolution workspace; algorithms needing more
  /// are skipped, and a failed allocation falls back to a smaller one.
  int64_t conv_workspace_limit_bytes = int64_t(1) << 30;
};
BackendOptions& backend_options();

}  // namespace ipsnet
