#include "cuda/caching_allocator.h"

#include <cstdio>

#include "engine/common/error.h"

namespace ipsnet {
namespace cuda {

CachingAllocator::CachingAllocator(Device device, std::unique_ptr<SystemMemory> system)
    : device_(device), system_(std::move(system)) {}

CachingAllocator::~CachingAllocator() {
  // Live blocks may still be referenced by tensors that outlive the allocator
  // at exit; only the cache is released.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& kv : free_) system_->raw_free(kv.second, kv.first);
  free_.clear();
}

size_t CachingAllocator::size_class(size_t nbytes) {
  constexpr size_t kMin = 512;
  if (nbytes <= kMin) return kMin;
  // Largest power of two <= nbytes, then quarter steps above it.
  size_t p = kMin;
  while (p <= nbytes / 2) p *= 2;
  size_t step = p / 4;
  size_t cls = (nbytes + step - 1) / step * step;
  return cls;
}

void* CachingAllocator::allocate_locked(size_t cls) {
  auto it = free_.find(cls);
  if (it != free_.end()) {
    void* p = it->second;
    free_.erase(it);
    cached_bytes_ -= cls;
    live_[p] = cls;
    return p;
  }
  return nullptr;
}

size_t CachingAllocator::release_all_locked() {
  if (free_.empty()) return 0;
  // A block freed on the host may still be in use by queued kernels (stream
  // order made its reuse safe, not its release): wait for the device first.
  system_->synchronize();
  size_t released = 0;
  for (auto& kv : free_) {
    system_->raw_free(kv.second, kv.first);
    released += kv.first;
  }
  free_.clear();
  cached_bytes_ = 0;
  if (released > 0) record_release(released);
  return released;
}

void* CachingAllocator::allocate(size_t nbytes) {
  const size_t cls = size_class(nbytes);
  std::unique_lock<std::mutex> lock(mu_);
  if (void* p = allocate_locked(cls)) {
    lock.unlock();
    record_alloc(nbytes, false, 0);
    return p;
  }
  void* p = system_->raw_alloc(cls);
  if (!p) {
    // Out of memory: give the cache back to the driver and try once more.
    // (A release lowers `reserved` only: it is no tensor free.)
    if (release_all_locked() > 0) p = system_->raw_alloc(cls);
  }
  if (!p) {
    lock.unlock();
    const double mib = 1024.0 * 1024.0;
    const std::string sys = system_->describe();
    throw OutOfMemoryError(str_cat(device_.str(), ": out of memory allocating ", nbytes / mib, " MiB (block ",
                                   cls / mib, " MiB) after emptying the cache; ", stats().str(),
                                   sys.empty() ? "" : "; ", sys, " [", __func__, " at ", __FILE__, ":", __LINE__,
                                   "]"));
  }
  live_[p] = cls;
  lock.unlock();
  record_alloc(nbytes, true, cls);
  return p;
}

void CachingAllocator::deallocate(void* ptr, size_t nbytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) {
      // Called from destructors: report, never throw.
      std::fprintf(stderr, "ipsnet: %s caching allocator: free of unknown pointer %p ignored\n",
                   device_.str().c_str(), ptr);
      return;
    }
    size_t cls = it->second;
    live_.erase(it);
    free_.emplace(cls, ptr);
    cached_bytes_ += cls;
  }
  record_free(nbytes, false, 0);
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  release_all_locked();  // reserved drops; allocated and the counts are unchanged
}

size_t CachingAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_bytes_;
}

size_t CachingAllocator::cached_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_.size();
}

}  // namespace cuda
}  // namespace ipsnet
