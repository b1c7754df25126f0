#include "layers/batchnorm.h"

namespace ipsnet {

namespace {
thread_local BatchNormSync* tl_bn_sync = nullptr;
}
BatchNormSync* batchnorm_sync() { return tl_bn_sync; }
BatchNormSyncGuard::BatchNormSyncGuard(BatchNormSync* sync) : prev_(tl_bn_sync) { tl_bn_sync = sync; }
BatchNormSyncGuard::~BatchNormSyncGuard() { tl_bn_sync = prev_; }

BatchNormBase::BatchNormBase(const BatchNormOptions& o, const char* type_name, int64_t lo, int64_t hi)
    : Module(type_name), options_(o), dim_lo_(lo), dim_hi_(hi) {
  IPSNET_CHECK(o.num_features() > 0, type_name, ": num_features must be positive, got ", o.num_features());
  int64_t c = o.num_features();
  if (o.affine()) {
    weight_ = register_parameter("weight", Tensor::ones({c}, o.dtype()));
    bias_ = register_parameter("bias", Tensor::zeros({c}, o.dtype()));
  }
  if (o.track_running_stats()) {
    running_mean_ = register_buffer("running_mean", Tensor::zeros({c}, o.dtype()));
    running_var_ = register_buffer("running_var", Tensor::ones({c}, o.dtype()));
    num_batches_tracked_ = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::Int64));
  }
}

Tensor BatchNormBase::forward(const Tensor& x) { return run(x, false, false); }

Tensor BatchNormBase::forward_relu(const Tensor& x, bool recompute) { return run(x, true, recompute); }

void BatchNormBase::count_batch() {
  if (!training_ || !running_mean_.defined()) return;
  NoGradGuard ng;
  num_batches_tracked_.fill_(num_batches_tracked_.item() + 1);
}

Tensor BatchNormBase::forward_stem(const Tensor& x, const Tensor& conv_weight, ops::Pair conv_stride,
                                   ops::Pair conv_padding, ops::Pair pool_kernel, ops::Pair pool_stride,
                                   ops::Pair pool_padding, int64_t chunk) {
  IPSNET_CHECK(x.dim() == 4, type_name(), " (stem): input ", shape_str(x.shape()), " must be (N, C, H, W)");
  const bool use_batch = use_batch_stats();
  if (use_batch && tl_bn_sync) return Tensor();
  if (use_batch) count_batch();
  return ops::conv_bn_relu_pool(x, conv_weight, weight_, bias_, running_mean_, running_var_, use_batch,
                                options_.momentum(), options_.eps(), conv_stride, conv_padding, pool_kernel,
                                pool_stride, pool_padding, chunk);
}

Tensor BatchNormBase::run(const Tensor& x, bool relu, bool recompute) {
  check_defined(x, type_name().c_str(), "x");
  IPSNET_CHECK(x.dim() >= dim_lo_ && x.dim() <= dim_hi_ && x.size(1) == options_.num_features(), type_name(),
               ": input ", shape_str(x.shape()), " does not fit num_features ", options_.num_features(),
               " (expected ", dim_lo_, dim_lo_ == dim_hi_ ? "" : str_cat(" to ", dim_hi_), " dims, C at dim 1)");
  // Batch statistics in training mode, or always when no running stats are kept.
  const bool use_batch = use_batch_stats();
  if (use_batch) count_batch();
  if (use_batch && tl_bn_sync) return run_synced(x, relu, *tl_bn_sync);
  // Without running stats the buffers are undefined and the op only normalises.
  if (relu)
    return ops::batch_norm_relu(x, weight_, bias_, running_mean_, running_var_, use_batch, options_.momentum(),
                                options_.eps(), recompute);
  return ops::batch_norm(x, weight_, bias_, running_mean_, running_var_, use_batch, options_.momentum(),
                         options_.eps());
}

Tensor BatchNormBase::run_synced(const Tensor& x, bool relu, BatchNormSync& sync) {
  // mean = sum(x) / n and var = sum((x - mean)^2) / n over the global batch
  // (two passes: no cancellation), n = every rank's N * H * W.
  const int64_t C = x.size(1);
  std::vector<int64_t> dims{0};
  Shape per_channel(static_cast<size_t>(x.dim()), 1);
  per_channel[1] = C;
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  double n = 0;
  {
    NoGradGuard ng;
    n = sync.sum_over_ranks(Tensor::full({1}, static_cast<double>(x.numel() / C), DType::Float64)).item();
  }
  Tensor mean = sync.sum_over_ranks(ops::sum(x, dims)) / n;
  Tensor xc = x - mean.reshape(per_channel);
  Tensor var = sync.sum_over_ranks(ops::sum(ops::square(xc), dims)) / n;
  Tensor y = xc * ops::reciprocal(ops::sqrt(var + options_.eps())).reshape(per_channel);
  if (weight_.defined()) y = y * weight_.reshape(per_channel) + bias_.reshape(per_channel);
  if (relu) y = ops::relu(y);
  if (training_ && running_mean_.defined()) {
    NoGradGuard ng;
    const double m = options_.momentum();
    running_mean_.copy_(running_mean_ * (1 - m) + mean.detach() * m);
    running_var_.copy_(running_var_ * (1 - m) + var.detach() * (m * n / std::max(1.0, n - 1)));
  }
  return y;
}

}  // namespace ipsnet
