// Data-parallel training over the ranks of dist::world() (docs/distributed.md):
// what the trainer asks of several processes, in one place.
//
// - Start: every rank checks it runs the same config (a hash of its YAML) and
//   that B is divisible by K; rank 0's parameters and buffers go to all.
// - A global batch of B images is cut into K contiguous shards (rank r: images
//   [r n / K, (r + 1) n / K) of the batch's n); each rank selects and trains
//   on its shard; the gradients are summed over ranks in buckets while
//   backward runs, each rank's multiplied by n_r / n, which is the gradient of
//   the global batch's mean loss, as one process computes it.
// - BatchNorm statistics are those of each rank's shard by default (as the
//   reference's single-GPU training would compute them for that sub-batch;
//   the running statistics of rank 0 are the ones saved); with
//   `sync_batchnorm: true` they are those of the whole global batch, summed
//   over the ranks (sum_over_ranks, a differentiable sum). With synchronised
//   statistics, a frozen encoder or no BatchNorm, K ranks compute what one
//   process computes, up to the order of the float sums.
// - Rank 0 alone writes the log, metrics, checkpoints and progress; evaluation
//   is sharded the same way and gathered in image order.
// - Now and then (every `check_every` steps and at each epoch end) a checksum
//   of the parameters is compared between ranks.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/comm.h"
#include "engine/dist/reducer.h"
#include "engine/tensor/tensor.h"
#include "layers/batchnorm.h"
#include "layers/module.h"

namespace ipsnet {
namespace train {

class DataParallel : public BatchNormSync {
 public:
  DataParallel();
  bool active() const { return size_ > 1; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Rank 0: the one that writes files and prints progress.
  bool writer() const { return rank_ == 0; }

  /// Start-up checks (every rank calls them): the global batch B divides into
  /// K shards; every rank's config YAML hashes the same.
  void check_start(int64_t B, const std::string& config_yaml) const;
  /// Rank 0's string on every rank (the run directory's name).
  std::string broadcast_string(const std::string& s) const;
  /// Rank 0's parameters and buffers to every rank.
  void broadcast_module(Module& m) const;
  /// Compares a checksum of the parameters (not the buffers) between ranks; throws naming the
  /// ranks that differ from rank 0 and the step.
  void check_in_sync(Module& m, int64_t step) const;

  /// Rank r's shard [r n / K, (r + 1) n / K) of a global batch of n images.
  std::vector<int64_t> shard(const std::vector<int64_t>& ids) const;

  /// Gradient reduction: attach once to the trained parameters, then wrap
  /// each backward in begin_backward / end_backward.
  void attach(std::vector<Tensor> params, int64_t bucket_bytes);
  void begin_backward(int64_t local_images, int64_t global_images);
  void end_backward();
  const dist::GradReducer* reducer() const { return reducer_.get(); }

  /// A differentiable sum over ranks (synchronised BatchNorm): backward sums
  /// the ranks' output gradients, each weighted by its rank's share of the
  /// global loss, and divides by this rank's share (the reducer multiplies the
  /// parameter gradients by it again).
  Tensor sum_over_ranks(const Tensor& x) override;

  /// Sum over ranks (loss totals, image counts, an interrupt flag).
  double sum(double v) const;
  /// Concatenation along dim 0, in rank order, of every rank's CPU tensor
  /// (same dtype and trailing shape on all ranks; dim 0 may differ).
  Tensor gather_cat(const Tensor& local) const;
  /// Every rank's string in rank order, joined (rank 0's first).
  std::string gather_string(const std::string& local) const;

 private:
  dist::Comm& comm_;
  int rank_ = 0, size_ = 1;
  std::unique_ptr<dist::GradReducer> reducer_;
  double backward_scale_ = 1.0;  // this rank's share of the global batch (begin_backward)
};

/// A cheap order-sensitive checksum of tensors' bytes (FNV-1a over float bits).
uint64_t tensor_checksum(const std::vector<Tensor>& ts);

}  // namespace train
}  // namespace ipsnet
