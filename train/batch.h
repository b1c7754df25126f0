// Batches of Megapixel MNIST images for IPS: labels per task and patch
// sources for the three loading modes (SPEC section 4).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "models/ips_selection.h"
#include "train/config.h"

namespace ipsnet {
namespace train {

/// Targets of a batch: task -> (B) int64 (softmax tasks) or (B, n_class) float (sigmoid tasks), CPU.
std::map<std::string, Tensor> batch_targets(const data::DatasetReader& reader, const std::vector<int64_t>& ids,
                                            const std::vector<TaskConfig>& tasks);

/// Checks that the dataset has a label for every task.
void check_tasks(const data::DatasetReader& reader, const std::vector<TaskConfig>& tasks);

/// Lazy loading: patches are cut from the stored sparse images on demand; an
/// all-zero patch is known from the sparse index without touching pixels.
/// Host memory holds only the patches asked for.
class LazySource : public PatchSource {
 public:
  LazySource(const data::DatasetReader& reader, std::vector<int64_t> ids, PatchGrid grid, Device device);
  int64_t batch() const override { return static_cast<int64_t>(ids_.size()); }
  int64_t num_patches() const override { return grid_.count(); }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override;
  bool is_zero(int64_t image, int64_t patch) const override;

 private:
  const data::DatasetReader& reader_;
  std::vector<int64_t> ids_;
  PatchGrid grid_;
  Device device_;
};

/// Eager loading: the whole batch's patches (B, N, 1, h, w) are resident on
/// the device before selection (memory grows with N).
class EagerSource : public PatchSource {
 public:
  EagerSource(const data::DatasetReader& reader, const std::vector<int64_t>& ids, PatchGrid grid, Device device);
  int64_t batch() const override { return patches_.size(0); }
  int64_t num_patches() const override { return patches_.size(1); }
  Tensor get(const std::vector<int64_t>& image, const std::vector<int64_t>& patch) override;
  bool is_zero(int64_t image, int64_t patch) const override;
  const Tensor& patches() const { return patches_; }  // (B, N, 1, h, w)
  /// Moves the resident patches to a device (prefetching builds them on the host).
  void to(Device device) { patches_ = patches_.to(device); }

 private:
  Tensor patches_;
  std::vector<uint8_t> zero_;  // (B * N)
};

/// Cuts the patches of one dense (H, W) image into dst (N, h, w).
void unfold_patches(const float* image, const PatchGrid& grid, float* dst);

}  // namespace train
}  // namespace ipsnet
