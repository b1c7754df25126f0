#include "engine/dist/reducer.h"

#include "engine/autograd/grad_mode.h"
#include "engine/common/error.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace dist {

GradReducer::GradReducer(Comm& comm, std::vector<Tensor> params, int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)) {
  IPSNET_CHECK(bucket_bytes > 0, "GradReducer: bucket_bytes must be > 0");
  bucket_of_.assign(params_.size(), 0);
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    IPSNET_CHECK(p.dtype() == DType::Float32, "data-parallel training: parameter ", k, " is ",
                 dtype_name(p.dtype()), "; gradients are reduced in float32");
    IPSNET_CHECK(p.device() == params_.back().device(), "data-parallel training: parameters on several devices");
    if (buckets_.empty() || buckets_.back().numel * 4 >= bucket_bytes) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
    bucket_of_[k] = buckets_.size() - 1;
    index_[p.impl()] = k;
  }
  for (Bucket& b : buckets_)
    b.flat = Tensor::zeros({b.numel + static_cast<int64_t>(b.params.size())}, DType::Float32,
                           params_.empty() ? Device::cpu() : params_[0].device());
}

void GradReducer::begin(double scale) {
  scale_ = scale;
  started_early_ = 0;
  for (Bucket& b : buckets_) {
    b.pending = static_cast<int>(b.params.size());
    b.started = false;
    b.work.reset();
  }
  active_ = true;
  guard_ = std::make_unique<GradReadyHookGuard>(this);
}

void GradReducer::ready(TensorImpl* leaf) {
  if (!active_) return;
  auto it = index_.find(leaf);
  if (it == index_.end()) return;  // not a parameter of this model (e.g. an input)
  Bucket& b = buckets_[bucket_of_[it->second]];
  if (--b.pending == 0 && !b.started) {
    start(b);
    ++started_early_;
  }
  // Give the transport a chance to make progress on what is in flight.
  for (Bucket& o : buckets_)
    if (o.work) o.work->test();
}

void GradReducer::start(Bucket& b) {
  NoGradGuard ng;
  Tensor grads = b.flat.narrow(0, 0, b.numel);
  Tensor flags = b.flat.narrow(0, b.numel, static_cast<int64_t>(b.params.size()));
  std::vector<float> have(b.params.size(), 0.0f);
  for (size_t j = 0; j < b.params.size(); ++j) {
    const Tensor& p = params_[b.params[j]];
    Tensor dst = grads.narrow(0, b.offsets[j], p.numel());
    Tensor g = p.grad();
    if (g.defined()) {
      dst.copy_(g.reshape({-1}));
      have[j] = 1.0f;
    } else {
      ops::mul_(dst, 0.0);
    }
  }
  if (scale_ != 1.0) ops::mul_(grads, scale_);
  flags.copy_(Tensor::from_vector(have, {static_cast<int64_t>(have.size())}).to(flags.device()));
  b.started = true;
  b.work = comm_.allreduce_sum_async(b.flat);
}

void GradReducer::finish() {
  IPSNET_CHECK(active_, "GradReducer::finish without begin");
  guard_.reset();
  active_ = false;
  for (Bucket& b : buckets_)
    if (!b.started) start(b);
  NoGradGuard ng;
  for (Bucket& b : buckets_) {
    b.work->wait();
    b.work.reset();
    std::vector<float> flags =
        b.flat.narrow(0, b.numel, static_cast<int64_t>(b.params.size())).to(Device::cpu()).to_vector<float>();
    for (size_t j = 0; j < b.params.size(); ++j) {
      if (flags[j] == 0.0f) continue;  // no rank had a gradient for it
      Tensor& p = params_[b.params[j]];
      Tensor src = b.flat.narrow(0, b.offsets[j], p.numel()).reshape(p.shape());
      Tensor g = p.grad();
      if (g.defined()) g.copy_(src);
      else p.set_grad(src.clone());
    }
  }
}

}  // namespace dist
}  // namespace ipsnet
