// Per-device allocators with statistics.
//
// Every tensor byte comes from an Allocator. The statistics follow PyTorch's
// vocabulary: `allocated` = bytes held by live tensors (the figure IPS papers
// report as peak memory), `reserved` = bytes obtained from the system (larger
// than allocated under the caching allocators: CPU blocks of 1 MiB and more,
// every CUDA block).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <string>

#include "engine/tensor/dtype.h"

namespace ipsnet {

struct MemoryStats {
  int64_t allocated_bytes = 0;       // current bytes held by tensors/workspaces
  int64_t peak_allocated_bytes = 0;  // max of allocated since the last reset_peak()
  int64_t reserved_bytes = 0;        // current bytes obtained from the system
  int64_t peak_reserved_bytes = 0;   // max of reserved since the last reset_peak()
  int64_t num_allocs = 0;            // allocation calls since start
  int64_t num_frees = 0;             // free calls since start
  int64_t num_system_allocs = 0;     // calls that went to the system (cache misses)
  std::string str() const;           // one line, MiB
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  /// Returns memory for nbytes (nbytes may be 0; a non-null pointer is still returned).
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual Device device() const = 0;
  /// Returns cached but unused memory to the system (no-op without a cache).
  virtual void empty_cache() {}
  MemoryStats stats() const;
  void reset_peak();

 protected:
  /// Bookkeeping helpers for implementations (thread-safe).
  void record_alloc(size_t nbytes, bool from_system, size_t system_bytes);
  void record_free(size_t nbytes, bool to_system, size_t system_bytes);
  /// A cached block went back to the system (reserved only).
  void record_release(size_t system_bytes);

 private:
  mutable std::mutex mu_;
  MemoryStats stats_;
};

/// The allocator of a device (CPU: 64-byte aligned, no cache). CUDA allocators
/// are registered by the CUDA backend when it is linked and a device is present.
Allocator& get_allocator(Device d);
void register_allocator(Device d, Allocator* a);
/// Statistics of a device's allocator.
MemoryStats memory_stats(Device d = Device::cpu());
void reset_peak_memory(Device d = Device::cpu());

/// The CPU allocator: 64-byte aligned, counted like any other.
///
/// Requests of kCacheMin bytes and more are rounded up to a block size (at
/// most 1/8 above the request) and, when a tensor frees them, kept for reuse
/// instead of being returned to the system: a fresh block costs a page fault
/// and a kernel page clear per 4 KiB on first touch, which measured 35 % of a
/// training step of the official config before this cache. A request takes the
/// smallest cached block of at least its size and at most 1.5 times it. Unused
/// cached bytes are capped (IPSNET_CPU_CACHE_MIB, default 1024; 0 turns the
/// cache off): the oldest-freed blocks go back first. `reserved` counts held
/// blocks, in use or cached; empty_cache() returns the cached ones. On a
/// failed system allocation the cache is emptied and the allocation retried.
class CpuAllocator : public Allocator {
 public:
  static constexpr size_t kCacheMin = size_t(1) << 20;
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  void empty_cache() override;
  /// Cap on unused cached bytes (0: no cache). Default from IPSNET_CPU_CACHE_MIB.
  void set_cache_limit(size_t bytes);
  size_t cache_limit();
  /// The block a cached request is rounded to (requests >= kCacheMin).
  static size_t block_size(size_t nbytes);

 private:
  struct Cached {
    void* ptr;
    size_t bytes;
  };
  void evict_locked(size_t keep_bytes);  // frees oldest blocks until cached <= keep_bytes
  std::mutex cache_mu_;
  std::list<Cached> lru_;                                      // oldest first
  std::multimap<size_t, std::list<Cached>::iterator> by_size_;  // block size -> entry
  std::map<void*, size_t> live_blocks_;                          // cached-size blocks in use
  size_t cached_bytes_ = 0;
  bool limit_known_ = false;
  size_t limit_ = 0;
};

}  // namespace ipsnet
