// The caching allocator behind every CUDA tensor and library workspace.
//
// Blocks are rounded up to size classes (512 B minimum, then four classes per
// power of two, so a block wastes at most 25%) and returned to per-class free
// lists on deallocate instead of to the driver: the IPS loop allocates the
// same shapes every iteration, so after the first one nearly every request is
// a cache hit. All work on a device runs on that device's one stream, so a
// block freed on the host may be handed out again at once (stream order makes
// the reuse safe).
//
// On out-of-memory the cache is emptied and the request retried once; a second
// failure throws cuda::OutOfMemoryError (an ipsnet::Error) with the statistics.
// Cached blocks go back to the system only after the device's queued work has
// finished (SystemMemory::synchronize): a block freed on the host may still be
// read or written by a kernel in flight.
//
// Statistics: num_allocs / num_frees count tensor (and workspace) requests
// only; giving cached blocks back lowers `reserved` and counts no free.
//
// This header includes no CUDA header: the system memory is behind the
// SystemMemory interface (cudaMalloc/cudaFree in cuda_allocator.cpp), so the
// bookkeeping is tested on machines without a GPU (tests/cuda).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/common/error.h"
#include "engine/memory/allocator.h"

namespace ipsnet {
namespace cuda {

/// Thrown when the device has no room for a request even after the cache was
/// emptied. Callers that can do with less (an algorithm with a smaller
/// workspace) catch this type only: any other error is a real failure.
class OutOfMemoryError : public Error {
 public:
  explicit OutOfMemoryError(const std::string& msg) : Error(msg) {}
};

/// Where the caching allocator gets its memory from.
class SystemMemory {
 public:
  virtual ~SystemMemory() = default;
  /// nbytes > 0; returns nullptr when out of memory (other failures throw).
  virtual void* raw_alloc(size_t nbytes) = 0;
  virtual void raw_free(void* ptr, size_t nbytes) = 0;
  /// Waits until no queued device work can still touch a cached block; called
  /// once before cached blocks are given back (empty_cache, the OOM retry).
  virtual void synchronize() {}
  /// A few words for the out-of-memory message ("free 1.2 GiB of 80 GiB").
  virtual std::string describe() const { return ""; }
};

class CachingAllocator : public Allocator {
 public:
  CachingAllocator(Device device, std::unique_ptr<SystemMemory> system);
  ~CachingAllocator() override;

  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return device_; }
  /// Returns every cached block to the system.
  void empty_cache() override;

  /// Bytes held in the free lists (reserved but not allocated).
  size_t cached_bytes() const;
  /// Number of blocks in the free lists.
  size_t cached_blocks() const;

  /// The size class of a request: >= nbytes, >= 512, at most 25% larger.
  static size_t size_class(size_t nbytes);

 private:
  void* allocate_locked(size_t cls);
  size_t release_all_locked();

  Device device_;
  std::unique_ptr<SystemMemory> system_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;           // class size -> cached block
  std::unordered_map<void*, size_t> live_;      // block -> class size
  size_t cached_bytes_ = 0;
};

}  // namespace cuda
}  // namespace ipsnet
