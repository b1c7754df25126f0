#include "engine/memory/allocator.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>

#include "engine/common/error.h"

namespace ipsnet {

std::string MemoryStats::str() const {
  char buf[256];
  const double mib = 1024.0 * 1024.0;
  std::snprintf(buf, sizeof(buf),
                "allocated %.1f MiB (peak %.1f MiB), reserved %.1f MiB (peak %.1f MiB), %lld allocs",
                allocated_bytes / mib, peak_allocated_bytes / mib, reserved_bytes / mib,
                peak_reserved_bytes / mib, static_cast<long long>(num_allocs));
  return buf;
}

MemoryStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

void Allocator::record_alloc(size_t nbytes, bool from_system, size_t system_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.allocated_bytes += static_cast<int64_t>(nbytes);
  stats_.num_allocs++;
  if (stats_.allocated_bytes > stats_.peak_allocated_bytes)
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
  if (from_system) {
    stats_.num_system_allocs++;
    stats_.reserved_bytes += static_cast<int64_t>(system_bytes);
    if (stats_.reserved_bytes > stats_.peak_reserved_bytes)
      stats_.peak_reserved_bytes = stats_.reserved_bytes;
  }
}

void Allocator::record_free(size_t nbytes, bool to_system, size_t system_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.allocated_bytes -= static_cast<int64_t>(nbytes);
  stats_.num_frees++;
  if (to_system) stats_.reserved_bytes -= static_cast<int64_t>(system_bytes);
}

void* CpuAllocator::allocate(size_t nbytes) {
  constexpr size_t kAlign = 64;
  size_t rounded = (nbytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (!p) {
    IPSNET_FAIL("cpu allocator: out of memory allocating ", nbytes, " bytes (",
                stats().str(), ")");
  }
  record_alloc(nbytes, true, nbytes);
  return p;
}

void CpuAllocator::deallocate(void* ptr, size_t nbytes) {
  std::free(ptr);
  record_free(nbytes, true, nbytes);
}

namespace {
struct Registry {
  std::mutex mu;
  CpuAllocator cpu;
  std::map<int, Allocator*> cuda;
};
Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: tensors may outlive main's statics
  return *r;
}
}  // namespace

Allocator& get_allocator(Device d) {
  Registry& r = registry();
  if (d.is_cpu()) return r.cpu;
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.cuda.find(d.index);
  IPSNET_CHECK(it != r.cuda.end(), "no allocator for device ", d.str(),
               ": this build has no usable CUDA device (run `ipsnet info`)");
  return *it->second;
}

void register_allocator(Device d, Allocator* a) {
  Registry& r = registry();
  IPSNET_CHECK(d.is_cuda(), "register_allocator: only CUDA allocators are registered, got ", d.str());
  std::lock_guard<std::mutex> lock(r.mu);
  r.cuda[d.index] = a;
}

MemoryStats memory_stats(Device d) { return get_allocator(d).stats(); }
void reset_peak_memory(Device d) { get_allocator(d).reset_peak(); }

}  // namespace ipsnet
