// conv_bn_relu_pool: the ResNet stem, max_pool(relu(batch_norm(conv2d(x)))),
// as one op that walks the batch in chunks (precision: bf16's memory, issue 17).
//
// The stem's conv output is the widest map of the encoder (64 x h/2 x w/2 per
// patch, 16 times a 1-channel patch of side h): composed of single ops, the
// forward holds it twice (conv output and BatchNorm+ReLU output) and the
// backward three times (recomputed conv output, the ReLU mask and the incoming
// gradient) for every patch of the batch at once. Here nothing of that width
// exists beyond one chunk of images:
//
// forward   pass A (training): per chunk, conv -> per-channel mean and M2,
//           merged over chunks in double (Chan et al.): the batch statistics.
//           pass B: per chunk, conv -> (c - mean) rstd gamma + beta -> relu
//           -> max pool, written into the output. Saved: x, the weight,
//           gamma, beta, mean and var (C): no activation.
// backward  g (N, C, ho', wo'). Per chunk the forward is recomputed (same
//           primitives, same chunks: the same values), the pool's gradient
//           scattered to its argmax, masked by the ReLU (gy), and
//           pass 1 (training): S1 = sum gy, S2 = sum gy xh over all chunks
//                  (= dbeta, dgamma), xh = (c - mean) rstd;
//           pass 2: dc = rstd gamma (gy - S1 / n - xh S2 / n) (batch
//                  statistics; rstd gamma gy with constant ones), then the
//                  conv's weight gradient summed over chunks and its input
//                  gradient written per chunk.
// With one chunk (N <= chunk) the two passes share one recomputation.
//
// Batch statistics are the biased variance for normalising and the unbiased
// one for the running update (PyTorch). Values equal those of the composed
// ops up to float rounding (statistics merged in double, BatchNorm applied as
// in eval with the batch statistics): tests/engine/test_stem.cpp.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace ops {

namespace {

struct StemGeometry {
  Conv2dGeometry conv;   // for the whole batch; conv_n(len) for a chunk
  Pool2dGeometry pool;   // likewise (pool_n)
  BatchNormGeometry bn;  // likewise (bn_n)
  int64_t chunk = 1;
  Conv2dGeometry conv_n(int64_t n) const {
    Conv2dGeometry g = conv;
    g.n = n;
    return g;
  }
  Pool2dGeometry pool_n(int64_t n) const {
    Pool2dGeometry g = pool;
    g.n = n;
    return g;
  }
  BatchNormGeometry bn_n(int64_t n) const {
    BatchNormGeometry g = bn;
    g.n = n;
    return g;
  }
};

// The conv output of one chunk [s, s + len) of the batch.
Tensor conv_chunk(const Tensor& x, const Tensor& w, const StemGeometry& G, int64_t s, int64_t len) {
  Tensor c = Tensor::empty({len, G.conv.o, G.conv.ho, G.conv.wo}, x.dtype(), x.device());
  backend_for(x.device()).conv2d_forward(x.narrow(0, s, len), w, Tensor(), c, G.conv_n(len));
  return c;
}

// relu((c - mean) / sqrt(var + eps) gamma + beta) of one chunk's conv output.
Tensor bn_relu_chunk(const Tensor& c, const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var,
                     const StemGeometry& G, double eps) {
  Backend& be = backend_for(c.device());
  Tensor y = Tensor::empty(c.shape(), c.dtype(), c.device());
  be.batch_norm_forward_inference(c, gamma, beta, mean, var, y, G.bn_n(c.size(0)), eps);
  be.unary(math::UnaryOp::Relu, y, y, 0.0);
  return y;
}

struct ConvBnReluPoolBackward : Node {
  SavedTensor x, weight, gamma, beta, mean, var;  // mean, var (C): what the forward normalised with
  StemGeometry geom;
  bool batch_stats = true;
  bool need_x = false, need_w = false, need_gamma = false, need_beta = false;
  double eps = 0;
  const char* name() const override { return "ConvBnReluPoolBackward"; }
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor xx = x.unpack(name()), w = weight.unpack(name());
    Tensor gm = gamma.unpack(name()), bt = beta.unpack(name());
    Tensor m = mean.unpack(name()), v = var.unpack(name());
    Tensor gc = g.contiguous();
    Backend& be = backend_for(xx.device());
    const StemGeometry& G = geom;
    const int64_t n = G.conv.n, C = G.conv.o;
    Tensor rstd;
    {
      NoGradGuard ng;
      rstd = reciprocal(sqrt(add(v, eps)));
    }
    // gy of one chunk: the pool's gradient at its argmax, masked by the ReLU
    // (written over y); c is kept for xh.
    auto chunk_grad = [&](int64_t s, int64_t len) {
      Tensor c = conv_chunk(xx, w, G, s, len);
      Tensor y = bn_relu_chunk(c, gm, bt, m, v, G, eps);
      const Pool2dGeometry pg = G.pool_n(len);
      Tensor pooled = Tensor::empty({len, C, pg.ho, pg.wo}, xx.dtype(), xx.device());
      Tensor idx = Tensor::empty(pooled.shape(), DType::Int64, xx.device());
      be.max_pool2d_forward(y, pooled, idx, pg);
      pooled = Tensor();
      Tensor gy = Tensor::empty(y.shape(), xx.dtype(), xx.device());
      be.max_pool2d_backward(gc.narrow(0, s, len), idx, gy, pg);
      be.unary_backward(math::UnaryOp::Relu, Tensor(), y, gy, y, 0.0);
      return std::make_pair(c, y);  // (c, gy)
    };
    Tensor s1, s2;  // (C): sum gy, sum gy xh
    const bool one_chunk = n <= G.chunk;
    std::pair<Tensor, Tensor> kept;
    if (batch_stats || need_gamma || need_beta) {
      s1 = Tensor::zeros({C}, xx.dtype(), xx.device());
      s2 = Tensor::zeros({C}, xx.dtype(), xx.device());
      Tensor d1 = Tensor::empty({C}, xx.dtype(), xx.device()), d2 = Tensor::empty({C}, xx.dtype(), xx.device());
      for (int64_t s = 0; s < n; s += G.chunk) {
        const int64_t len = std::min(G.chunk, n - s);
        std::pair<Tensor, Tensor> cg = chunk_grad(s, len);
        // With constant statistics the backend's backward gives exactly the sums.
        be.batch_norm_backward(cg.first, gm, cg.second, m, rstd, Tensor(), d2, d1, G.bn_n(len), true, eps);
        NoGradGuard ng;
        add_(s1, d1);
        add_(s2, d2);
        if (one_chunk) kept = std::move(cg);
      }
    }
    Tensor dx, dw, dgamma, dbeta;
    if (need_gamma) dgamma = s2;
    if (need_beta) dbeta = s1;
    if (need_x || need_w) {
      if (need_x) dx = Tensor::empty(xx.shape(), xx.dtype(), xx.device());
      if (need_w) dw = Tensor::zeros(w.shape(), w.dtype(), w.device());
      Tensor dw_chunk = need_w ? Tensor::empty(w.shape(), w.dtype(), w.device()) : Tensor();
      const Shape per_channel{1, C, 1, 1};
      Tensor k1, k2;  // the batch-statistics terms: S1 / n and rstd S2 / n per channel
      if (batch_stats) {
        NoGradGuard ng;
        const double count = static_cast<double>(G.bn.count());
        k1 = mul(s1, 1.0 / count).reshape(per_channel);
        k2 = mul(mul(s2, rstd), 1.0 / count).reshape(per_channel);
      }
      for (int64_t s = 0; s < n; s += G.chunk) {
        const int64_t len = std::min(G.chunk, n - s);
        std::pair<Tensor, Tensor> cg = one_chunk && kept.first.defined() ? std::move(kept) : chunk_grad(s, len);
        Tensor gy = cg.second;
        if (batch_stats) {
          NoGradGuard ng;
          gy = sub(sub(gy, k1), mul(sub(cg.first, m.reshape(per_channel)), k2));
        }
        cg = {};
        // With the corrected gy, the constant-statistics backward is the full one.
        Tensor dc = Tensor::empty(gy.shape(), xx.dtype(), xx.device());
        be.batch_norm_backward(Tensor(), gm, gy, m, rstd, dc, Tensor(), Tensor(), G.bn_n(len), true, eps);
        gy = Tensor();
        const Conv2dGeometry cgeo = G.conv_n(len);
        if (need_x) be.conv2d_backward_data(dc, w, dx.narrow(0, s, len), cgeo);
        if (need_w) {
          be.conv2d_backward_weight(xx.narrow(0, s, len), dc, dw_chunk, Tensor(), cgeo);
          NoGradGuard ng;
          add_(dw, dw_chunk);
        }
      }
    }
    return {dx, dw, dgamma, dbeta};
  }
  void release() override {
    x.reset();
    weight.reset();
    gamma.reset();
    beta.reset();
    mean.reset();
    var.reset();
  }
};

}  // namespace

Tensor conv_bn_relu_pool(const Tensor& x, const Tensor& weight, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, bool training, double momentum,
                         double eps, Pair conv_stride, Pair conv_padding, Pair pool_kernel, Pair pool_stride,
                         Pair pool_padding, int64_t chunk) {
  const char* op = "conv_bn_relu_pool";
  StemGeometry G;
  G.conv = conv2d_geometry(x, weight, Tensor(), conv_stride, conv_padding, {1, 1});
  const int64_t n = G.conv.n, C = G.conv.o;
  IPSNET_CHECK(chunk >= 1, op, ": chunk must be >= 1, got ", chunk);
  G.chunk = chunk;
  const Shape cs{C};
  for (const Tensor* t : {&gamma, &beta, &running_mean, &running_var}) {
    if (!t->defined()) continue;
    check_same(x, *t, op);
    IPSNET_CHECK(t->shape() == cs, op, ": per-channel tensor ", shape_str(t->shape()), " vs weight ",
                 shape_str(weight.shape()), ": expected (", C, ",)");
  }
  IPSNET_CHECK(running_mean.defined() == running_var.defined(), op,
               ": running_mean and running_var must both be given or both be omitted");
  IPSNET_CHECK(training || running_mean.defined(), op, ": eval mode needs running_mean and running_var");
  IPSNET_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  G.bn.n = n;
  G.bn.c = C;
  G.bn.s = G.conv.ho * G.conv.wo;
  if (training)
    IPSNET_CHECK(G.bn.count() > 1, op, ": input ", shape_str(x.shape()),
                 ": expected more than 1 value per channel when training, got ", G.bn.count());
  {
    // The pool's geometry from the conv output's shape.
    Tensor probe = Tensor::empty({0, C, G.conv.ho, G.conv.wo}, x.dtype(), x.device());
    G.pool = max_pool2d_geometry(probe, pool_kernel, pool_stride, pool_padding);
    G.pool.n = n;
  }
  Backend& be = backend_for(x.device());
  // bfloat16 convolutions as conv2d chooses them: under PrecisionGuard, or
  // under ConvBf16Guard when nothing is recorded (the selection).
  const bool record = any_requires_grad({&x, &weight, &gamma, &beta});
  G.conv.bf16 = (precision_bf16_enabled() || (!record && conv_bf16_enabled())) && x.dtype() == DType::Float32 &&
                be.supports_bf16_conv();
  Tensor xc = x.detach().contiguous(), wc = weight.detach().contiguous();
  Tensor gc = gamma.defined() ? gamma.detach().contiguous() : Tensor();
  Tensor bc = beta.defined() ? beta.detach().contiguous() : Tensor();

  Tensor mean, var, out;
  {
  NoGradGuard ng;
  // The statistics to normalise with: the batch's (pass A) or copies of the
  // running ones (backward sees these even if the buffers change later).
  Tensor first_c;  // pass A's conv output when it is the whole batch
  if (training) {
    std::vector<double> mu(static_cast<size_t>(C), 0.0), m2(static_cast<size_t>(C), 0.0);
    double count = 0;
    const Shape per_channel{1, C, 1, 1};
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      Tensor c = conv_chunk(xc, wc, G, s, len);
      Tensor cm = ops::mean(c, {0, 2, 3});
      Tensor cv = ops::mean(square(sub(c, cm.reshape(per_channel))), {0, 2, 3});
      const std::vector<double> bm = cm.to_vector<double>(), bv = cv.to_vector<double>();
      const double nb = static_cast<double>(len * G.bn.s), tot = count + nb;
      for (size_t k = 0; k < mu.size(); ++k) {
        const double d = bm[k] - mu[k];
        mu[k] += d * nb / tot;
        m2[k] += bv[k] * nb + d * d * count * nb / tot;
      }
      count = tot;
      if (n <= chunk) first_c = c;
    }
    std::vector<double> vb(mu.size());
    for (size_t k = 0; k < mu.size(); ++k) vb[k] = m2[k] / count;
    mean = Tensor::from_vector(mu, cs).to(x.dtype()).to(x.device());
    var = Tensor::from_vector(vb, cs).to(x.dtype()).to(x.device());
    if (running_mean.defined()) {
      std::vector<double> rm = running_mean.to_vector<double>(), rv = running_var.to_vector<double>();
      for (size_t k = 0; k < mu.size(); ++k) {
        rm[k] = (1 - momentum) * rm[k] + momentum * mu[k];
        rv[k] = (1 - momentum) * rv[k] + momentum * vb[k] * count / std::max(1.0, count - 1);
      }
      running_mean.detach().copy_(Tensor::from_vector(rm, cs).to(x.dtype()).to(x.device()));
      running_var.detach().copy_(Tensor::from_vector(rv, cs).to(x.dtype()).to(x.device()));
    }
  } else {
    mean = running_mean.detach().clone();
    var = running_var.detach().clone();
  }

  // Pass B: normalise, ReLU and pool chunk by chunk into the output.
  out = Tensor::empty({n, C, G.pool.ho, G.pool.wo}, x.dtype(), x.device());
  for (int64_t s = 0; s < n; s += chunk) {
    const int64_t len = std::min(chunk, n - s);
    Tensor c = first_c.defined() ? std::move(first_c) : conv_chunk(xc, wc, G, s, len);
    Tensor y = bn_relu_chunk(c, gc, bc, mean, var, G, eps);
    c = Tensor();
    be.max_pool2d_forward(y, out.narrow(0, s, len), Tensor(), G.pool_n(len));
  }

  }
  if (record) {
    auto node = std::make_shared<ConvBnReluPoolBackward>();
    node->geom = G;
    node->batch_stats = training;
    node->eps = eps;
    node->need_x = x.requires_grad();
    node->need_w = weight.requires_grad();
    node->need_gamma = gamma.defined() && gamma.requires_grad();
    node->need_beta = beta.defined() && beta.requires_grad();
    node->x = SavedTensor(xc);
    node->weight = SavedTensor(wc);
    node->gamma = SavedTensor(gc);
    node->beta = SavedTensor(bc);
    node->mean = SavedTensor(mean);
    node->var = SavedTensor(var);
    set_history(out, node, {x, weight, gamma, beta});
  }
  return out;
}

}  // namespace ops
}  // namespace ipsnet
