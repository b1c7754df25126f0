// Per-device CUDA state: one stream, the cuBLAS and cuDNN handles bound to it,
// the caching allocator, pinned staging buffers for host transfers, and a
// device-side record of the first out-of-range index. Created on first use of
// a device (a device nothing runs on gets no context).
//
// Index checks are asynchronous: the indexing kernels test each index, skip an
// out-of-range one (gather writes 0) and record it; the record is read at the
// next synchronisation point (a device-to-host copy, synchronize()), which
// throws naming the op, the index and the size. With IPSNET_CUDA_SYNC=1 it is
// read right after the launch that found it.
//
// Every primitive runs on its device's stream; the library handles are bound
// to the same stream, so all work on a device is ordered and the caching
// allocator may reuse a freed block at once.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "cuda/caching_allocator.h"
#include "cuda/check.h"

namespace ipsnet {
namespace cuda {

/// Number of usable devices (0 when the runtime reports an error).
int device_count();

/// Makes `device` current for the scope; restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  int device_ = -1;
};

/// Page-locked host memory (cudaHostAlloc); movable, freed on destruction.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t nbytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

/// A device buffer from the caching allocator, returned on scope exit
/// (library workspaces: they count toward the statistics and the peak).
class ScopedDeviceBuffer {
 public:
  ScopedDeviceBuffer() = default;
  ScopedDeviceBuffer(Allocator& a, size_t nbytes) : alloc_(&a), size_(nbytes) {
    data_ = nbytes ? a.allocate(nbytes) : nullptr;
  }
  ~ScopedDeviceBuffer() { reset(); }
  ScopedDeviceBuffer(ScopedDeviceBuffer&& o) noexcept { *this = std::move(o); }
  ScopedDeviceBuffer& operator=(ScopedDeviceBuffer&& o) noexcept {
    reset();
    alloc_ = o.alloc_; data_ = o.data_; size_ = o.size_;
    o.data_ = nullptr; o.size_ = 0;
    return *this;
  }
  void reset() {
    if (data_) alloc_->deallocate(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  Allocator* alloc_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
};

/// The first out-of-range index an indexing kernel met (device memory).
/// state: 0 none, 1 being written, 2 complete.
struct IndexErrorRecord {
  unsigned long long state;
  long long value;  // the offending index
  long long size;   // the size of the indexed dimension
  int op;           // IndexOp
  int pad;
};
enum class IndexOp : int { Gather = 1, ScatterAdd, IndexSelect, IndexAdd, CutPatches };
const char* index_op_name(int op);

struct CudaContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
  int sm_count = 1;
  size_t max_shared_per_block_optin = 48 * 1024;
  CachingAllocator* allocator = nullptr;  // registered with the engine, never freed
  // Transfers: two pinned staging buffers used alternately, each with an
  // event that says when its last copy has finished.
  static constexpr size_t kStagingBytes = size_t(8) << 20;
  PinnedBuffer staging[2];
  cudaEvent_t staging_done[2] = {nullptr, nullptr};
  std::mutex transfer_mu;
  // Index checks: kernels record the first bad index in index_error_dev
  // (device memory, zeroed); `index_error_pending` says an indexing kernel ran
  // since the record was last read into index_error_host (pinned).
  IndexErrorRecord* index_error_dev = nullptr;
  IndexErrorRecord* index_error_host = nullptr;
  std::atomic<bool> index_error_pending{false};
  std::mutex index_error_mu;
  // cuBLAS workspace (from the caching allocator, so it is counted).
  ScopedDeviceBuffer cublas_workspace;
  bool cublas_tf32 = false;
};

/// The context of a device, created on first use (thread-safe).
CudaContext& context(int device);
/// The context of a device if it was created, else null (creates nothing).
CudaContext* existing_context(int device);
/// The caching allocator of a device (creates the context).
CachingAllocator& device_allocator(int device);

/// Grid size for an elementwise kernel over n items with `threads` per block:
/// enough blocks to fill the device a few times over, grid-stride beyond.
unsigned grid_for(const CudaContext& ctx, int64_t n, int threads);

/// Waits for the device's stream, then reports an index error recorded by
/// an earlier launch (throws). Creates the context if needed.
void synchronize(int device);
/// synchronize() for every device that has a context (creates none).
void synchronize_used_devices();

/// After an indexing kernel was queued: note that the error record must be
/// read; with the debug switch, read it now (synchronises).
void index_kernel_queued(CudaContext& ctx);
/// Reads the error record if an indexing kernel ran since the last read
/// (one small copy and a wait on the stream) and throws when it holds an
/// error, naming the op, the index and the size; the record is cleared.
void check_index_errors(CudaContext& ctx);

}  // namespace cuda
}  // namespace ipsnet
