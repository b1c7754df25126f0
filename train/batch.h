// Batches for the methods: the images of a data source, their targets, and
// the instance sources the selection reads (SPEC section 4's loading modes):
//   lazy             instances read from the source when asked (LazySource)
//   eager            the batch's images resident on the device (EagerSource)
//   eager sequential B_seq images resident at a time (several parts)
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/source.h"
#include "models/ips_selection.h"
#include "train/config.h"

namespace ipsnet {
namespace train {

/// Targets of a batch: task -> (B) int64 class (softmax tasks) or
/// (B, n_class) float multi-hot (sigmoid tasks), CPU.
std::map<std::string, Tensor> batch_targets(const data::DataSource& source, const std::vector<int64_t>& ids,
                                            const std::vector<TaskConfig>& tasks);

/// Checks that the source stores a label of the right kind and size for every task.
void check_tasks(const data::DataSource& source, const std::vector<TaskConfig>& tasks);

/// Lazy loading: instances are read from the source on demand (only the rows
/// a patch needs; an all-zero patch is known from the sparse index without
/// touching pixels). Host memory holds only the instances asked for.
class LazySource : public PatchSource {
 public:
  LazySource(const data::DataSource& source, std::vector<int64_t> ids, Device device);
  int64_t batch() const override { return static_cast<int64_t>(ids_.size()); }
  int64_t num_patches() const override { return n_; }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override;
  bool is_zero(int64_t image, int64_t patch) const override;

 private:
  const data::DataSource& source_;
  std::vector<int64_t> ids_;
  int64_t n_ = 0;
  Device device_;
};

/// Eager loading: the batch is resident on the device before selection
/// (memory grows with N): the whole images (B, C, H, W), cut into patches on
/// the device by the backend's cut_patches; for sources without pixels, every
/// instance (B, N, F).
class EagerSource : public PatchSource {
 public:
  EagerSource(const data::DataSource& source, const std::vector<int64_t>& ids, Device device);
  int64_t batch() const override { return data_.size(0); }
  int64_t num_patches() const override { return n_; }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override;
  bool is_zero(int64_t image, int64_t patch) const override;
  /// Moves the resident batch to a device (prefetching builds it on the host).
  void to(Device device) { data_ = data_.to(device); }

 private:
  Tensor data_;                 // (B, C, H, W) images, or (B, N, F) instances
  bool pixels_ = false;
  PatchGrid grid_;
  int64_t n_ = 0;
  std::vector<uint8_t> zero_;   // (B * N) patch holds only zeros
};

/// A batch of images of one source as the trainer hands it to a method.
class Batch {
 public:
  /// eager: resident images, `seq` (B_seq) of them at a time; else lazy.
  Batch(const data::DataSource& source, std::vector<int64_t> ids, Device device, bool eager_mode, int64_t seq);

  const data::DataSource& source() const { return source_; }
  const std::vector<int64_t>& ids() const { return ids_; }
  int64_t size() const { return static_cast<int64_t>(ids_.size()); }
  Device device() const { return device_; }

  /// True for eager loading (parts resident on the device).
  bool resident() const { return eager_mode_; }
  /// The parts a method walks through one at a time: B / B_seq resident
  /// sub-batches for eager loading; for lazy loading one, or B / B_seq
  /// sub-batches when the batch's images have different instance counts
  /// (feature bags: N varies per slide).
  int64_t parts() const;
  /// The instances of part k, on the device (an eager part is made resident
  /// now unless prepare() did it ahead).
  PatchSource& part(int64_t k);
  /// Drops a resident part once the method is done with it.
  void release(int64_t k);
  /// Host-side work done ahead, on a background thread: the first eager part
  /// made resident (on the host), lazy records paged in and checksummed.
  void prepare();

  /// Eager parts prepared or in use (null: not resident).
  std::vector<std::unique_ptr<EagerSource>> eager;

  /// What a method's selection step leaves for its forward (IPS: the
  /// selected instances and their indices).
  Tensor selected_patches;  // (B*M, C, h, w) or (B*M, F)
  Tensor selected_idx;      // (B, M) int64

 private:
  std::vector<int64_t> part_ids(int64_t k) const;
  const data::DataSource& source_;
  std::vector<int64_t> ids_;
  Device device_;
  bool eager_mode_;
  int64_t seq_;
  int64_t lazy_parts_ = 1;  // lazy loading: 1, or B / B_seq when N differs within the batch
  int64_t lazy_part_ = -1;  // the part lazy_ reads
  std::unique_ptr<LazySource> lazy_;
};

}  // namespace train
}  // namespace ipsnet
