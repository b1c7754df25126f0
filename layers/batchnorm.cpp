#include "layers/batchnorm.h"

namespace ipsnet {

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

Tensor BatchNormBase::run(const Tensor& x, bool relu, bool recompute) {
  check_defined(x, type_name().c_str(), "x");
  IPSNET_CHECK(x.dim() >= dim_lo_ && x.dim() <= dim_hi_ && x.size(1) == options_.num_features(), type_name(),
               ": input ", shape_str(x.shape()), " does not fit num_features ", options_.num_features(),
               " (expected ", dim_lo_, dim_lo_ == dim_hi_ ? "" : str_cat(" to ", dim_hi_), " dims, C at dim 1)");
  bool has_stats = running_mean_.defined();
  // Batch statistics in training mode, or always when no running stats are kept.
  bool use_batch = (training_ && !freeze_stats_) || !has_stats;
  if (use_batch && training_ && has_stats) {
    NoGradGuard ng;
    num_batches_tracked_.fill_(num_batches_tracked_.item() + 1);
  }
  // Without running stats the buffers are undefined and the op only normalises.
  if (relu)
    return ops::batch_norm_relu(x, weight_, bias_, running_mean_, running_var_, use_batch, options_.momentum(),
                                options_.eps(), recompute);
  return ops::batch_norm(x, weight_, bias_, running_mean_, running_var_, use_batch, options_.momentum(),
                         options_.eps());
}

}  // namespace ipsnet
