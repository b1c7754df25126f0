// Per-device allocators with statistics.
//
// Every tensor byte comes from an Allocator. The statistics follow PyTorch's
// vocabulary: `allocated` = bytes held by live tensors (the figure IPS papers
// report as peak memory), `reserved` = bytes obtained from the system (equal to
// allocated on the CPU, larger under the CUDA caching allocator).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
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
class CpuAllocator : public Allocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
};

}  // namespace ipsnet
