// Per-device allocators with statistics.
//
// Every tensor byte comes from an Allocator. The statistics follow PyTorch's
// vocabulary: `allocated` = bytes held by live tensors (the figure IPS papers
// report as peak memory), `reserved` = bytes obtained from the system (larger
// than allocated where freed memory is kept for reuse: the CPU arena of blocks
// of 1 MiB and more, the CUDA caching allocator).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>

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
/// Requests of kArenaMin (1 MiB) and more come from an arena: a virtual
/// segment as large as physical memory (anonymous mmap with MAP_NORESERVE, so
/// only touched pages cost memory; further segments only if it fills; huge
/// pages advised), carved best fit (the smallest free range that holds the
/// request, lowest address first) and coalesced with free neighbours on free.
/// Freed ranges keep their pages, so a training loop stops page faulting after
/// its first step (a fresh page costs a fault plus a kernel page clear: 35 % of
/// a step of the official config before the arena); and because ranges split
/// and merge, what the arena holds stays near the peak of live tensors rather
/// than the sum of each size's own peak. `reserved` counts, per segment, the
/// bytes up to the highest range ever handed out (what can be resident).
/// empty_cache() gives free pages back (madvise DONTNEED), unmaps empty
/// segments and lowers `reserved` where the free tail of a segment allows.
/// IPSNET_CPU_ARENA=0 (or set_arena(false)) sends every request to
/// aligned_alloc / free instead; blocks already in the arena still go back to it.
class CpuAllocator : public Allocator {
 public:
  static constexpr size_t kArenaMin = size_t(1) << 20;
  static constexpr size_t kGranule = size_t(64) << 10;  // arena block sizes are multiples of this
  static constexpr size_t kSegment = size_t(1) << 30;   // minimum segment (virtual) size
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }
  void empty_cache() override;
  /// Whether large requests use the arena (default: IPSNET_CPU_ARENA, on unless "0").
  bool arena_enabled();
  void set_arena(bool on);

 private:
  struct Segment {
    size_t size = 0;  // virtual bytes
    size_t top = 0;   // high-water offset of ranges handed out (counted as reserved)
  };
  std::map<uintptr_t, Segment>::iterator segment_of(uintptr_t addr);
  void add_free(uintptr_t addr, size_t size);     // coalesces within the segment
  void remove_free(uintptr_t addr, size_t size);
  std::mutex arena_mu_;
  int enabled_ = -1;                                   // -1: not read yet
  std::map<uintptr_t, Segment> segments_;              // by base address
  std::map<uintptr_t, size_t> free_by_addr_;           // free ranges
  std::set<std::pair<size_t, uintptr_t>> free_by_size_;
  std::map<uintptr_t, size_t> live_;                   // arena blocks in use
};

}  // namespace ipsnet
