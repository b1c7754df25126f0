#include "engine/memory/allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <cstdlib>
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

size_t CpuAllocator::block_size(size_t nbytes) {
  size_t top = 1;
  while (top <= nbytes / 2) top <<= 1;  // highest power of two <= nbytes
  const size_t step = std::max<size_t>(size_t(64) << 10, top / 8);
  return (nbytes + step - 1) / step * step;
}

size_t CpuAllocator::cache_limit() {
  std::lock_guard<std::mutex> lock(cache_mu_);
  if (!limit_known_) {
    limit_known_ = true;
    limit_ = size_t(1024) << 20;
    if (const char* env = std::getenv("IPSNET_CPU_CACHE_MIB")) {
      char* end = nullptr;
      const long long v = std::strtoll(env, &end, 10);
      IPSNET_CHECK(end != env && *end == '\0' && v >= 0,
                   "IPSNET_CPU_CACHE_MIB: expected a whole number of MiB >= 0, got '", env, "'");
      limit_ = static_cast<size_t>(v) << 20;
    }
  }
  return limit_;
}

void CpuAllocator::set_cache_limit(size_t bytes) {
  cache_limit();  // reads the environment once, then the setter wins
  std::lock_guard<std::mutex> lock(cache_mu_);
  limit_ = bytes;
  evict_locked(limit_);
}

void CpuAllocator::evict_locked(size_t keep_bytes) {
  while (cached_bytes_ > keep_bytes && !lru_.empty()) {
    Cached c = lru_.front();
    auto range = by_size_.equal_range(c.bytes);
    for (auto it = range.first; it != range.second; ++it)
      if (it->second == lru_.begin()) {
        by_size_.erase(it);
        break;
      }
    lru_.pop_front();
    cached_bytes_ -= c.bytes;
    std::free(c.ptr);
    record_release(c.bytes);
  }
}

void CpuAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(cache_mu_);
  evict_locked(0);
}

void* CpuAllocator::allocate(size_t nbytes) {
  constexpr size_t kAlign = 64;
  if (nbytes < kCacheMin || cache_limit() == 0) {
    size_t rounded = (nbytes + kAlign - 1) / kAlign * kAlign;
    if (rounded == 0) rounded = kAlign;
    void* p = std::aligned_alloc(kAlign, rounded);
    if (!p) {
      IPSNET_FAIL("cpu allocator: out of memory allocating ", nbytes, " bytes (", stats().str(), ")");
    }
    record_alloc(nbytes, true, nbytes);
    return p;
  }
  const size_t block = block_size(nbytes);
  std::unique_lock<std::mutex> lock(cache_mu_);
  auto it = by_size_.lower_bound(block);
  if (it != by_size_.end() && it->first <= block + block / 2) {
    Cached c = *it->second;
    lru_.erase(it->second);
    by_size_.erase(it);
    cached_bytes_ -= c.bytes;
    live_blocks_[c.ptr] = c.bytes;
    lock.unlock();
    record_alloc(nbytes, false, 0);
    return c.ptr;
  }
  // Page-aligned so that the kernel may back the block with huge pages.
  constexpr size_t kPage = 4096;
  void* p = std::aligned_alloc(kPage, block);
  if (!p) {
    evict_locked(0);
    p = std::aligned_alloc(kPage, block);
  }
  if (!p) {
    lock.unlock();
    IPSNET_FAIL("cpu allocator: out of memory allocating ", nbytes, " bytes (", stats().str(), ")");
  }
#ifdef MADV_HUGEPAGE
  if (block >= (size_t(4) << 20)) madvise(p, block, MADV_HUGEPAGE);  // advisory; failure is harmless
#endif
  live_blocks_[p] = block;
  lock.unlock();
  record_alloc(nbytes, true, block);
  return p;
}

void CpuAllocator::deallocate(void* ptr, size_t nbytes) {
  if (nbytes >= kCacheMin) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto live = live_blocks_.find(ptr);
    if (live != live_blocks_.end()) {  // a cached-size block (absent when the cache was off)
      const size_t block = live->second;
      live_blocks_.erase(live);
      if (limit_ > 0 && block <= limit_) {
        evict_locked(limit_ - block);
        lru_.push_back(Cached{ptr, block});
        by_size_.emplace(block, std::prev(lru_.end()));
        cached_bytes_ += block;
        record_free(nbytes, false, 0);
      } else {
        std::free(ptr);
        record_free(nbytes, true, block);
      }
      return;
    }
  }
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
