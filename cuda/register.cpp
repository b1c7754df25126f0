// Registers the CUDA backend with the engine at start-up: the device probe
// (always), and, when at least one device is usable, the backend and one
// caching allocator per device. Linked whole-archive (cuda/CMakeLists.txt) so
// that this static initialiser is kept.
#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "cuda/context.h"
#include "cuda/cuda_backend.h"
#include "engine/backend/device_select.h"

#ifndef IPSNET_CUDA_ARCHS_STR
#define IPSNET_CUDA_ARCHS_STR "?"
#endif

namespace ipsnet {
namespace cuda {

namespace {

std::string cuda_version_str(int v) { return str_cat(v / 1000, ".", (v % 1000) / 10); }

DeviceProbe probe() {
  DeviceProbe p;
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  p.versions.emplace_back("CUDA runtime", str_cat(cuda_version_str(runtime), " (built with ",
                                                  cuda_version_str(CUDART_VERSION), ", archs sm_",
                                                  IPSNET_CUDA_ARCHS_STR, ")"));
  p.versions.emplace_back("CUDA driver", driver ? cuda_version_str(driver) : std::string("none"));
  const size_t cudnn = cudnnGetVersion();
  p.versions.emplace_back("cuDNN", str_cat(cudnn / 10000, ".", (cudnn % 10000) / 100, ".", cudnn % 100,
                                           " (built with ", CUDNN_MAJOR, ".", CUDNN_MINOR, ".", CUDNN_PATCHLEVEL, ")"));
  int bmaj = 0, bmin = 0, bpatch = 0;
  (void)cublasGetProperty(MAJOR_VERSION, &bmaj);
  (void)cublasGetProperty(MINOR_VERSION, &bmin);
  (void)cublasGetProperty(PATCH_LEVEL, &bpatch);
  p.versions.emplace_back("cuBLAS", str_cat(bmaj, ".", bmin, ".", bpatch, " (built with ", CUBLAS_VER_MAJOR, ".",
                                            CUBLAS_VER_MINOR, ".", CUBLAS_VER_PATCH, ")"));

  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
    if (driver == 0)
      p.why_none = str_cat("no NVIDIA driver is installed or loadable (", status_string(e), ")");
    else if (e == cudaErrorInsufficientDriver)
      p.why_none = str_cat("the NVIDIA driver (CUDA ", cuda_version_str(driver),
                           ") is older than this build's CUDA runtime (", cuda_version_str(runtime), ")");
    else if (e == cudaErrorNoDevice)
      p.why_none = str_cat("the driver found no CUDA device (", status_string(e), ")");
    else
      p.why_none = str_cat("cudaGetDeviceCount failed: ", status_string(e));
  } else if (n == 0) {
    p.why_none = "the driver reports no CUDA device";
  }
  p.count = n;
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
      (void)cudaGetLastError();
      p.devices.push_back(str_cat("cuda:", d, " (properties unavailable)"));
      continue;
    }
    p.devices.push_back(str_cat("cuda:", d, " ", prop.name, ", ",
                                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0),
                                " GiB, compute capability ", prop.major, ".", prop.minor, ", ",
                                prop.multiProcessorCount, " SMs"));
  }
  return p;
}

struct Registrar {
  Registrar() {
    register_device_probe(&probe);
    // Count devices without creating contexts (handles come on first use).
    const int n = device_count();
    if (n <= 0) return;
    for (int d = 0; d < n; ++d) register_allocator(Device::cuda(d), &device_allocator(d));
    register_backend(DeviceType::CUDA, &cuda_backend());
  }
};
const Registrar registrar;

}  // namespace

}  // namespace cuda
}  // namespace ipsnet
