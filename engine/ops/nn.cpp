// softmax, log_softmax, layer_norm, dropout and the losses.
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"
#include "engine/random/generator.h"

namespace ipsnet {
namespace ops {

namespace {

struct SoftmaxBackward : Node {
  SavedTensor y;
  int64_t outer, n, inner;
  bool log;
  const char* name() const override { return log ? "LogSoftmaxBackward" : "SoftmaxBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor yy = y.unpack(name());
    Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty(yy.shape(), yy.dtype(), yy.device());
    backend_for(yy.device()).softmax_backward(yy, gc, dx, outer, n, inner, log);
    return {dx};
  }
  void release() override { y.reset(); }
};

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_defined(x, op, "x");
  IPSNET_CHECK(is_floating(x.dtype()), op, ": expected a floating tensor, got ", dtype_name(x.dtype()));
  Tensor xc = x.detach().contiguous();
  if (x.dim() == 0) xc = xc.reshape({1});
  dim = wrap_dim(dim, xc.dim(), op);
  int64_t outer, n, inner;
  dim_split(xc.shape(), dim, &outer, &n, &inner);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (n > 0) backend_for(x.device()).softmax(xc, y, outer, n, inner, log);
  if (any_requires_grad({&x})) {
    auto node = std::make_shared<SoftmaxBackward>();
    node->y = SavedTensor(y);
    node->outer = outer;
    node->n = n;
    node->inner = inner;
    node->log = log;
    set_history(y, node, {x});
  }
  return y;
}

struct LayerNormBackward : Node {
  SavedTensor x, gamma, mean, rstd;
  bool has_gamma, has_beta;
  int64_t rows, n;
  const char* name() const override { return "LayerNormBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor xx = x.unpack(name()), gm = gamma.unpack(name());
    Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty(xx.shape(), xx.dtype(), xx.device());
    Tensor dg, db;
    if (has_gamma) dg = Tensor::empty({n}, xx.dtype(), xx.device());
    if (has_beta) db = Tensor::empty({n}, xx.dtype(), xx.device());
    backend_for(xx.device())
        .layer_norm_backward(xx, gm, gc, mean.unpack(name()), rstd.unpack(name()), dx, dg, db, rows, n);
    return {dx, dg, db};
  }
  void release() override {
    x.reset();
    gamma.reset();
    mean.reset();
    rstd.reset();
  }
};

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, dim, true); }

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  check_defined(x, "layer_norm", "x");
  IPSNET_CHECK(x.dim() >= 1, "layer_norm: expected at least one dim, got a scalar");
  IPSNET_CHECK(is_floating(x.dtype()), "layer_norm: expected a floating tensor");
  int64_t n = x.size(-1);
  int64_t rows = n ? x.numel() / n : 0;
  Shape ns{n};
  if (gamma.defined()) {
    check_same(x, gamma, "layer_norm");
    IPSNET_CHECK(gamma.shape() == ns, "layer_norm: weight ", shape_str(gamma.shape()),
                 " vs input ", shape_str(x.shape()), ": expected (", n, ",)");
  }
  if (beta.defined()) {
    check_same(x, beta, "layer_norm");
    IPSNET_CHECK(beta.shape() == ns, "layer_norm: bias ", shape_str(beta.shape()), " vs input ",
                 shape_str(x.shape()), ": expected (", n, ",)");
  }
  Tensor xc = x.detach().contiguous();
  Tensor gc = gamma.defined() ? gamma.detach().contiguous() : Tensor();
  Tensor bc = beta.defined() ? beta.detach().contiguous() : Tensor();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  backend_for(x.device()).layer_norm(xc, gc, bc, y, mean, rstd, rows, n, eps);
  if (any_requires_grad({&x, &gamma, &beta})) {
    auto node = std::make_shared<LayerNormBackward>();
    node->x = SavedTensor(xc);
    node->gamma = SavedTensor(gc);
    node->mean = SavedTensor(mean);
    node->rstd = SavedTensor(rstd);
    node->has_gamma = gamma.defined() && gamma.requires_grad();
    node->has_beta = beta.defined() && beta.requires_grad();
    node->rows = rows;
    node->n = n;
    set_history(y, node, {x, gamma, beta});
  }
  return y;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_defined(x, "dropout", "x");
  IPSNET_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  if (p == 1.0) return mul(x, 0.0);
  Tensor mask = Tensor::empty(x.shape(), x.dtype(), x.device());
  uint64_t offset = gen.reserve(static_cast<uint64_t>(x.numel()));
  backend_for(x.device()).dropout_mask(mask, p, gen.seed(), gen.stream(), offset);
  return mul(x, mask);
}

Tensor nll_loss(const Tensor& logp, const Tensor& target) {
  check_defined(logp, "nll_loss", "input");
  check_defined(target, "nll_loss", "target");
  IPSNET_CHECK(logp.dim() == 2, "nll_loss: input must be (N, C), got ", shape_str(logp.shape()));
  IPSNET_CHECK(target.dtype() == DType::Int64, "nll_loss: target must be int64 class indices, got ",
               dtype_name(target.dtype()));
  IPSNET_CHECK(target.dim() == 1 && target.size(0) == logp.size(0), "nll_loss: target ",
               shape_str(target.shape()), " vs input ", shape_str(logp.shape()), ": expected (",
               logp.size(0), ",)");
  int64_t C = logp.size(1);
  for (int64_t t : target.to_vector<int64_t>())
    IPSNET_CHECK(t >= 0 && t < C, "nll_loss: target class ", t, " out of range for ", C, " classes");
  Tensor picked = gather(logp, 1, target.unsqueeze(1));
  return neg(mean(picked));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  check_defined(logits, "cross_entropy", "logits");
  IPSNET_CHECK(logits.dim() == 2, "cross_entropy: logits must be (N, C), got ", shape_str(logits.shape()));
  return nll_loss(log_softmax(logits, 1), target);
}

}  // namespace ops
}  // namespace ipsnet
