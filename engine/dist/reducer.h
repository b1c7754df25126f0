// Gradient averaging for data-parallel training, overlapped with backward.
//
// The parameters are grouped into buckets of about `bucket_bytes`, in the
// reverse of their registration order (backward finishes the last layers'
// gradients first). While backward runs, the autograd hook
// (GradReadyHookGuard) tells the reducer each time a parameter's gradient is
// final; when every parameter of a bucket is final, the bucket is copied into
// one flat buffer (multiplied by this rank's share of the global batch) and
// its sum over ranks starts at once, while backward goes on. finish() starts
// what is left, waits, and writes the sums back into .grad.
//
// One flag per parameter travels with each bucket: a parameter that got no
// gradient on any rank keeps no gradient (as in one process, so AdamW skips it
// as before); one that got a gradient on some ranks only gets the sum of those.
#pragma once
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/autograd/grad_mode.h"
#include "engine/dist/comm.h"
#include "engine/tensor/tensor.h"

namespace ipsnet {
namespace dist {

class GradReducer : public GradReadyHook {
 public:
  GradReducer(Comm& comm, std::vector<Tensor> params, int64_t bucket_bytes = int64_t(8) << 20);
  /// Watches the backward that follows on this thread; `scale` multiplies this
  /// rank's gradients before the sum (its images / the global batch's images).
  void begin(double scale);
  /// Starts what is left, waits for every sum, writes the gradients.
  void finish();
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  /// Buckets whose sum started during backward in the last step (overlap).
  int64_t started_early() const { return started_early_; }

  void ready(TensorImpl* leaf) override;

 private:
  struct Bucket {
    std::vector<size_t> params;    // indices into params_
    std::vector<int64_t> offsets;  // element offset of each in flat
    int64_t numel = 0;             // gradient elements (flags follow)
    Tensor flat;                   // numel + params.size() floats
    int pending = 0;
    bool started = false;
    std::unique_ptr<Work> work;
  };
  void start(Bucket& b);

  Comm& comm_;
  std::vector<Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::unordered_map<TensorImpl*, size_t> index_;
  double scale_ = 1.0;
  bool active_ = false;
  int64_t started_early_ = 0;
  std::unique_ptr<GradReadyHookGuard> guard_;
};

}  // namespace dist
}  // namespace ipsnet
