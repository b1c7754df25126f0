// Error checks for the CUDA backend.
//
// IPSNET_CUDA_CHECK(call) wraps any cudaError_t, cublasStatus_t or
// cudnnStatus_t call and throws ipsnet::Error naming the call, the status
// string and file:line. IPSNET_LAUNCH_CHECK("name_kernel") follows every kernel
// launch: it always checks the launch itself and, with the debug switch on
// (IPSNET_CUDA_SYNC=1 or cuda::set_debug_sync(true)), synchronises the device
// so that an asynchronous fault is reported against the kernel that caused it.
#pragma once
#include <cublas_api.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <string>
#include <type_traits>

#include "engine/common/error.h"

namespace ipsnet {
namespace cuda {

inline bool status_ok(cudaError_t s) { return s == cudaSuccess; }
inline bool status_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
inline bool status_ok(cudnnStatus_t s) { return s == CUDNN_STATUS_SUCCESS; }

inline std::string status_string(cudaError_t s) {
  return std::string(cudaGetErrorName(s)) + ": " + cudaGetErrorString(s);
}
inline std::string status_string(cublasStatus_t s) {
  return std::string(cublasGetStatusName(s)) + ": " + cublasGetStatusString(s);
}
inline std::string status_string(cudnnStatus_t s) { return cudnnGetErrorString(s); }

template <typename Status>
inline void check_status(Status s, const char* call, const char* func, const char* file, int line) {
  if (status_ok(s)) return;
  if constexpr (std::is_same<Status, cudaError_t>::value) (void)cudaGetLastError();  // clear sticky-free errors
  ::ipsnet::detail::throw_error(func, file, line, "CUDA call failed: ", call, ": ", status_string(s));
}

/// Debug switch: synchronise after every kernel launch (default: the
/// IPSNET_CUDA_SYNC environment variable, "1" = on).
bool debug_sync();
void set_debug_sync(bool on);

/// Checks the last launch; with debug_sync() also waits for it to finish.
void check_launch(const char* kernel, const char* func, const char* file, int line);

}  // namespace cuda
}  // namespace ipsnet

#define IPSNET_CUDA_CHECK(call) ::ipsnet::cuda::check_status((call), #call, __func__, __FILE__, __LINE__)
#define IPSNET_LAUNCH_CHECK(kernel_name) ::ipsnet::cuda::check_launch(kernel_name, __func__, __FILE__, __LINE__)
