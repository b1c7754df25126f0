#include "engine/backend/device_select.h"

#include <algorithm>
#include <cctype>
#include <mutex>

#include "engine/common/error.h"

namespace ipsnet {

namespace {
struct ProbeState {
  std::mutex mu;
  DeviceProbeFn fn = nullptr;
  bool done = false;
  DeviceProbe result;
};
ProbeState& probe_state() {
  static ProbeState* s = new ProbeState();
  return *s;
}
}  // namespace

void register_device_probe(DeviceProbeFn fn) {
  ProbeState& s = probe_state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.fn = fn;
  s.done = false;
}

const DeviceProbe& probe_devices() {
  ProbeState& s = probe_state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.done) {
    if (s.fn) {
      s.result = s.fn();
      s.result.built = true;
    } else {
      s.result = DeviceProbe();
      s.result.why_none =
          "this build has no CUDA backend (configure with -DIPSNET_CUDA=ON where nvcc, the CUDA "
          "toolkit and cuDNN are installed)";
    }
    if (s.result.count == 0 && s.result.why_none.empty()) s.result.why_none = "no CUDA device found";
    s.done = true;
  }
  return s.result;
}

Device resolve_device(const std::string& spec_in) {
  std::string spec = spec_in;
  std::transform(spec.begin(), spec.end(), spec.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (spec.empty() || spec == "auto") {
    return probe_devices().count > 0 ? Device::cuda(0) : Device::cpu();
  }
  if (spec == "cpu") return Device::cpu();
  IPSNET_CHECK(spec.rfind("cuda", 0) == 0, "--device: expected auto, cpu, cuda or cuda:N, got '",
               spec_in, "'");
  Device d = parse_device(spec);
  const DeviceProbe& p = probe_devices();
  IPSNET_CHECK(p.count > 0, "--device ", spec_in, ": no usable CUDA device: ", p.why_none,
               " (use --device cpu, or see `ipsnet info`)");
  IPSNET_CHECK(d.index >= 0 && d.index < p.count, "--device ", spec_in, ": only ", p.count,
               " CUDA device", p.count == 1 ? "" : "s", " found (cuda:0",
               p.count > 1 ? str_cat("..cuda:", p.count - 1) : std::string(), ")");
  return d;
}

BackendOptions& backend_options() {
  static BackendOptions* o = new BackendOptions();
  return *o;
}

}  // namespace ipsnet
