#include "engine/memory/allocator.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>
#include <cstdio>
#include <iterator>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>

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

void Allocator::record_release(size_t system_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.reserved_bytes -= static_cast<int64_t>(system_bytes);
}


bool CpuAllocator::arena_enabled() {
  std::lock_guard<std::mutex> lock(arena_mu_);
  if (enabled_ < 0) {
    const char* env = std::getenv("IPSNET_CPU_ARENA");
    enabled_ = (env && std::strcmp(env, "0") == 0) ? 0 : 1;
  }
  return enabled_ == 1;
}

void CpuAllocator::set_arena(bool on) {
  std::lock_guard<std::mutex> lock(arena_mu_);
  enabled_ = on ? 1 : 0;
}

std::map<uintptr_t, CpuAllocator::Segment>::iterator CpuAllocator::segment_of(uintptr_t addr) {
  auto it = segments_.upper_bound(addr);
  IPSNET_CHECK(it != segments_.begin(), "cpu allocator: address outside the arena");
  return std::prev(it);
}

void CpuAllocator::remove_free(uintptr_t addr, size_t size) {
  free_by_addr_.erase(addr);
  free_by_size_.erase({size, addr});
}

void CpuAllocator::add_free(uintptr_t addr, size_t size) {
  auto seg = segment_of(addr);
  const uintptr_t lo = seg->first, hi = seg->first + seg->second.size;
  auto next = free_by_addr_.find(addr + size);
  if (next != free_by_addr_.end() && addr + size < hi) {
    const size_t ns = next->second;
    remove_free(addr + size, ns);
    size += ns;
  }
  auto prev = free_by_addr_.lower_bound(addr);
  if (prev != free_by_addr_.begin()) {
    --prev;
    if (prev->first >= lo && prev->first + prev->second == addr) {
      const uintptr_t pa = prev->first;
      const size_t ps = prev->second;
      remove_free(pa, ps);
      addr = pa;
      size += ps;
    }
  }
  free_by_addr_[addr] = size;
  free_by_size_.insert({size, addr});
}

void* CpuAllocator::allocate(size_t nbytes) {
  constexpr size_t kAlign = 64;
  if (nbytes < kArenaMin || !arena_enabled()) {
    size_t rounded = (nbytes + kAlign - 1) / kAlign * kAlign;
    if (rounded == 0) rounded = kAlign;
    void* p = std::aligned_alloc(kAlign, rounded);
    if (!p) {
      IPSNET_FAIL("cpu allocator: out of memory allocating ", nbytes, " bytes (", stats().str(), ")");
    }
    record_alloc(nbytes, true, nbytes);
    return p;
  }
  const size_t size = (nbytes + kGranule - 1) / kGranule * kGranule;
  std::unique_lock<std::mutex> lock(arena_mu_);
  auto fit = free_by_size_.lower_bound({size, 0});
  if (fit == free_by_size_.end()) {
    // One segment as large as physical memory (virtual only: MAP_NORESERVE),
    // so that ranges can grow and merge anywhere; smaller on failure.
    constexpr size_t kHuge = size_t(2) << 20;
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const size_t ram = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : kSegment;
    const size_t need = (size + kHuge - 1) / kHuge * kHuge;
    size_t seg_size = std::max({kSegment, need, (ram + kHuge - 1) / kHuge * kHuge});
    void* p = MAP_FAILED;
    while (true) {
      p = mmap(nullptr, seg_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p != MAP_FAILED || seg_size / 2 < std::max(need, kSegment)) break;
      seg_size /= 2;
    }
    if (p == MAP_FAILED) {
      lock.unlock();
      IPSNET_FAIL("cpu allocator: out of memory allocating ", nbytes, " bytes: mmap of ", seg_size,
                  " bytes failed: ", std::strerror(errno), " (", stats().str(), ")");
    }
#ifdef MADV_HUGEPAGE
    madvise(p, seg_size, MADV_HUGEPAGE);  // advisory; failure is harmless
#endif
    const uintptr_t base = reinterpret_cast<uintptr_t>(p);
    segments_[base] = Segment{seg_size, 0};
    add_free(base, seg_size);
    fit = free_by_size_.lower_bound({size, 0});
  }
  const size_t fsize = fit->first;
  const uintptr_t addr = fit->second;
  remove_free(addr, fsize);
  if (fsize > size) add_free(addr + size, fsize - size);
  live_[addr] = size;
  auto seg = segment_of(addr);
  const size_t end = addr + size - seg->first;
  size_t grown = 0;
  if (end > seg->second.top) {
    grown = end - seg->second.top;
    seg->second.top = end;
  }
  lock.unlock();
  record_alloc(nbytes, grown > 0, grown);
  return reinterpret_cast<void*>(addr);
}

void CpuAllocator::deallocate(void* ptr, size_t nbytes) {
  if (nbytes >= kArenaMin) {
    std::lock_guard<std::mutex> lock(arena_mu_);
    auto live = live_.find(reinterpret_cast<uintptr_t>(ptr));
    if (live != live_.end()) {
      const size_t size = live->second;
      live_.erase(live);
      add_free(reinterpret_cast<uintptr_t>(ptr), size);
      record_free(nbytes, false, 0);
      return;
    }
  }
  std::free(ptr);
  record_free(nbytes, true, nbytes);
}

void CpuAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(arena_mu_);
  constexpr uintptr_t kPage = 4096;
  std::vector<std::pair<uintptr_t, size_t>> ranges(free_by_addr_.begin(), free_by_addr_.end());
  for (const auto& r : ranges) {
    auto seg = segment_of(r.first);
    const uintptr_t base = seg->first;
    if (r.first == base && r.second == seg->second.size) {  // an empty segment
      remove_free(r.first, r.second);
      munmap(reinterpret_cast<void*>(base), seg->second.size);
      record_release(seg->second.top);
      segments_.erase(seg);
      continue;
    }
    const uintptr_t lo = (r.first + kPage - 1) / kPage * kPage, hi = (r.first + r.second) / kPage * kPage;
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    if (r.first + r.second == base + seg->second.size && r.first - base < seg->second.top) {
      record_release(seg->second.top - (r.first - base));  // the free tail is no longer counted
      seg->second.top = r.first - base;
    }
  }
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
