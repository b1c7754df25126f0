// Refcounted device memory (shared by a tensor and its views).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/tensor/dtype.h"

namespace ipsnet {

class Allocator;
class Recompute;

class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  /// Version counter: bumped by every in-place write, checked by autograd.
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }
  /// How to recompute this storage's contents (engine/autograd/node.h): set by
  /// ops whose output backward may recompute instead of keeping; valid while
  /// the version equals recompute_version.
  std::shared_ptr<const Recompute> recompute;
  uint64_t recompute_version = 0;
  /// A bfloat16 copy of this storage's contents saved for backward
  /// (SavedTensor::bf16), shared by every node that saves this storage while
  /// the version equals bf16_copy_version; expires with its last saver.
  std::weak_ptr<Storage> bf16_copy;
  uint64_t bf16_copy_version = 0;

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
  std::atomic<uint64_t> version_{0};
};

}  // namespace ipsnet
