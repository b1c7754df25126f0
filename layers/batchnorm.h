// BatchNorm1d / BatchNorm2d with PyTorch's parameters and buffers.
#pragma once
#include "layers/module.h"

namespace ipsnet {

struct BatchNormOptions {
  explicit BatchNormOptions(int64_t num_features) : num_features_(num_features) {}
  IPSNET_ARG(int64_t, num_features);
  IPSNET_ARG(double, eps) = 1e-5;
  IPSNET_ARG(double, momentum) = 0.1;
  IPSNET_ARG(bool, affine) = true;
  IPSNET_ARG(bool, track_running_stats) = true;
  IPSNET_ARG(DType, dtype) = DType::Float32;
};

/// Synchronised batch statistics for data-parallel training
/// (`sync_batchnorm: true`, docs/distributed.md): while a BatchNormSyncGuard
/// lives on this thread, BatchNorm layers that use batch statistics normalise
/// with the mean and variance of the whole global batch, every rank's shard
/// together; `sum_over_ranks` is a differentiable sum over the ranks.
struct BatchNormSync {
  virtual ~BatchNormSync() = default;
  virtual Tensor sum_over_ranks(const Tensor& x) = 0;
};
BatchNormSync* batchnorm_sync();
class BatchNormSyncGuard {
 public:
  explicit BatchNormSyncGuard(BatchNormSync* sync);
  ~BatchNormSyncGuard();
  BatchNormSyncGuard(const BatchNormSyncGuard&) = delete;
  BatchNormSyncGuard& operator=(const BatchNormSyncGuard&) = delete;

 private:
  BatchNormSync* prev_;
};

/// Shared implementation. Parameters `weight` (C) = 1, `bias` (C) = 0 (with
/// affine); buffers `running_mean` (C) = 0, `running_var` (C) = 1 and
/// `num_batches_tracked` (int64 scalar) = 0 (with track_running_stats).
/// Training: batch statistics; running stats updated with `momentum`
/// (unbiased variance) and num_batches_tracked incremented. Eval: running
/// statistics. `freeze_stats(true)` makes the layer use and keep its running
/// statistics even in training mode (the frozen-backbone strategy).
class BatchNormBase : public Module {
 public:
  BatchNormBase(const BatchNormOptions& options, const char* type_name, int64_t expected_dim_lo,
                int64_t expected_dim_hi);
  /// x: (N, C) or (N, C, L) for 1d; (N, C, H, W) for 2d.
  Tensor forward(const Tensor& x) override;
  /// relu(forward(x)) as one op (ops::batch_norm_relu): saves x only; with
  /// recompute the output is recomputed in backward instead of being kept by
  /// the op that consumes it.
  Tensor forward_relu(const Tensor& x, bool recompute);
  /// max_pool2d(relu(forward(conv2d(x, conv_weight)))) as one chunked op
  /// (ops::conv_bn_relu_pool: the ResNet stem without any conv-sized map for
  /// the whole batch), with this layer's statistics and bookkeeping; undefined
  /// while batch statistics are synchronised over ranks (compose single ops then).
  Tensor forward_stem(const Tensor& x, const Tensor& conv_weight, ops::Pair conv_stride, ops::Pair conv_padding,
                      ops::Pair pool_kernel, ops::Pair pool_stride, ops::Pair pool_padding, int64_t chunk);
  const BatchNormOptions& options() const { return options_; }
  void freeze_stats(bool on) { freeze_stats_ = on; }
  bool stats_frozen() const { return freeze_stats_; }

  Tensor weight_;               // (C) or undefined
  Tensor bias_;                 // (C) or undefined
  Tensor running_mean_;         // (C) or undefined
  Tensor running_var_;          // (C) or undefined
  Tensor num_batches_tracked_;  // () int64 or undefined

 private:
  Tensor run(const Tensor& x, bool relu, bool recompute);
  /// Batch statistics now (training and not frozen, or no running stats kept).
  bool use_batch_stats() const { return (training_ && !freeze_stats_) || !running_mean_.defined(); }
  /// Counts a training batch in num_batches_tracked (when it is kept).
  void count_batch();
  /// Batch statistics summed over the ranks (composed of differentiable ops).
  Tensor run_synced(const Tensor& x, bool relu, BatchNormSync& sync);
  BatchNormOptions options_;
  int64_t dim_lo_, dim_hi_;
  bool freeze_stats_ = false;
};

/// PyTorch's nn.BatchNorm1d: x (N, C) or (N, C, L).
class BatchNorm1d : public BatchNormBase {
 public:
  explicit BatchNorm1d(const BatchNormOptions& options) : BatchNormBase(options, "BatchNorm1d", 2, 3) {}
};

/// PyTorch's nn.BatchNorm2d: x (N, C, H, W).
class BatchNorm2d : public BatchNormBase {
 public:
  explicit BatchNorm2d(const BatchNormOptions& options) : BatchNormBase(options, "BatchNorm2d", 4, 4) {}
};

}  // namespace ipsnet
