// `ipsnet info`: the build (versions of CUDA, cuDNN, cuBLAS, oneDNN, OpenBLAS,
// the photograph codecs: libpng, libjpeg-turbo or JPEG not built),
// the devices found, and why no CUDA device is usable when none is.
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdio>
#include <string>
#include <vector>

#include "apps/command.h"
#include "data/photo_codec.h"
#include "engine/backend/backend.h"
#include "engine/backend/device_select.h"

namespace ipsnet {
namespace app {
namespace {

int run_info(const std::vector<std::string>& args) {
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::printf("usage: ipsnet info\n\nPrints the build, the library versions and the devices found.\n");
      return 0;
    }
    std::fprintf(stderr, "ipsnet info: unknown argument '%s' (takes no options)\n", a.c_str());
    return 2;
  }
  std::printf("ipsnet %s\n\nbuild\n", IPSNET_VERSION);
#if defined(__clang__)
  std::printf("  %-14s clang %s\n", "compiler", __clang_version__);
#elif defined(__GNUC__)
  std::printf("  %-14s gcc %s\n", "compiler", __VERSION__);
#endif
  const DeviceProbe& p = probe_devices();
  std::printf("  %-14s %s\n", "CUDA backend", p.built ? "built" : "not built");
  for (const auto& kv : p.versions) std::printf("  %-14s %s\n", kv.first.c_str(), kv.second.c_str());
  const dnnl_version_t* dv = dnnl_version();
  std::printf("  %-14s %d.%d.%d (CPU convolution, batch norm, pooling)\n", "oneDNN", dv->major, dv->minor,
              dv->patch);
  std::printf("  %-14s %s\n", "OpenBLAS", openblas_get_config());
  std::printf("  %-14s %s\n", "photographs", data::codec_versions().c_str());
  std::printf("  %-14s %d\n", "CPU threads", num_threads());

  std::printf("\ndevices\n  cpu\n");
  for (const auto& d : p.devices) std::printf("  %s\n", d.c_str());
  if (p.count == 0) std::printf("  no usable CUDA device: %s\n", p.why_none.c_str());
  std::printf("\n--device auto selects: %s\n", resolve_device("auto").str().c_str());
  return 0;
}

CommandRegistrar reg("info", "print the build, library versions and devices", run_info);

}  // namespace
}  // namespace app
}  // namespace ipsnet
