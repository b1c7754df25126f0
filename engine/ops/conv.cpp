// conv2d, batch_norm, max_pool2d, adaptive_avg_pool2d_1x1: argument checks,
// the backend primitives (engine/backend/backend.h, "convolution, batch norm,
// pooling"), and backward nodes that save only what their backward reads.
// Backward contract: each node returns fresh gradients (=); AccumulateGrad
// adds them into leaves' .grad (+=).
#include "engine/autograd/grad_mode.h"
#include "engine/autograd/node.h"
#include "engine/ops/ops.h"

namespace ipsnet {
namespace ops {

namespace {

bool wants_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

Tensor detached_contiguous(const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); }

// ---- conv2d --------------------------------------------------------------------

struct Conv2dBackward : Node {
  SavedTensor x;       // (N, C, H, W), only when weight needs a gradient
  SavedTensor weight;  // (O, C, kh, kw), only when x needs a gradient
  Conv2dGeometry geom;
  bool need_x = false, need_w = false, need_b = false;
  DType dtype = DType::Float32;
  Device device;
  const char* name() const override { return "Conv2dBackward"; }
  // g: (N, O, ho, wo)
  std::vector<Tensor> apply(const Tensor& g) override {
    Backend& be = backend_for(device);
    Tensor gc = g.contiguous();
    Tensor dx, dw, db;
    if (need_x) {
      dx = Tensor::empty({geom.n, geom.c, geom.h, geom.w}, dtype, device);
      be.conv2d_backward_data(gc, weight.unpack(name()), dx, geom);
    }
    if (need_w) dw = Tensor::empty({geom.o, geom.c, geom.kh, geom.kw}, dtype, device);
    if (need_b) db = Tensor::empty({geom.o}, dtype, device);
    // A bfloat16 copy of x goes to the bf16 primitive as it is (that
    // primitive would round a float32 x to exactly these values): no
    // widened float32 map at this moment.
    Tensor xx = need_w ? (geom.bf16 ? x.unpack_stored(name()) : x.unpack(name())) : Tensor();
    if (need_w || need_b) be.conv2d_backward_weight(xx, gc, dw, db, geom);
    return {dx, dw, db};
  }
  void release() override {
    x.reset();
    weight.reset();
  }
};

// ---- batch_norm ----------------------------------------------------------------

// Recomputes relu(bn(x)) for a SavedTensor of batch_norm_relu's output, and
// for that op's own backward (the ReLU mask), exactly as the forward computed
// it (no running-stat update).
struct BatchNormReluRecompute : Recompute {
  SavedTensor x, gamma, beta, running_mean, running_var;  // running_*: eval-mode copies
  bool training = true;
  double eps = 0;
  static constexpr const char* kName = "batch_norm_relu (recompute)";
  Tensor run() const override { return run_on(x.unpack(kName)); }
  // The same from an x the caller has already unpacked.
  Tensor run_on(const Tensor& xx) const {
    NoGradGuard ng;
    return batch_norm_relu(xx, gamma.unpack(kName), beta.unpack(kName), running_mean.unpack(kName),
                           running_var.unpack(kName), training, 0.0, eps, false);
  }
};

struct BatchNormBackward : Node {
  SavedTensor x;      // (N, C, S) contiguous; only when backward reads it (always with relu)
  SavedTensor gamma;  // (C) or undefined
  SavedTensor mean;   // (C): batch mean (training) or a copy of running_mean (eval)
  SavedTensor rstd;   // (C): 1 / sqrt(var + eps)
  BatchNormGeometry geom;
  Shape x_shape;
  bool training = true;
  bool need_x = false, need_gamma = false, need_beta = false;
  double eps = 0;
  // batch_norm_relu: the mask comes from the ReLU output, saved (out) or
  // recomputed from x by the recipe its output carries.
  bool relu = false;
  SavedTensor out;
  std::shared_ptr<const BatchNormReluRecompute> recipe;
  const char* name() const override {
    if (relu) return training ? "BatchNormReluBackward" : "BatchNormReluEvalBackward";
    return training ? "BatchNormBackward" : "BatchNormEvalBackward";
  }
  std::vector<Tensor> apply(const Tensor& g) override { return apply_owned(g); }
  // g: x's shape
  std::vector<Tensor> apply_owned(Tensor g) override {
    Tensor gm = gamma.unpack(name());
    Tensor m = mean.unpack(name()), r = rstd.unpack(name());
    Tensor xx = x.unpack(name());
    Tensor gc = g.contiguous();
    g = Tensor();
    Backend& be = backend_for(gc.device());
    if (relu) {
      // y = relu(bn(x)); dy_bn = g * (y > 0), written over y when y is ours.
      Tensor y = recipe ? recipe->run_on(xx) : out.unpack(name());
      const bool owned = recipe || y.storage().use_count() == 1;
      Tensor dy = owned ? y : Tensor::empty(x_shape, gc.dtype(), gc.device());
      be.unary_backward(math::UnaryOp::Relu, Tensor(), y, gc, dy, 0.0);
      y = Tensor();
      gc = dy;  // the gradient of the ReLU's input; the incoming g is dropped
    }
    Tensor dx, dg, db;
    if (need_x) dx = Tensor::empty(x_shape, gc.dtype(), gc.device());
    if (need_gamma) dg = Tensor::empty({geom.c}, gc.dtype(), gc.device());
    if (need_beta) db = Tensor::empty({geom.c}, gc.dtype(), gc.device());
    be.batch_norm_backward(xx, gm, gc, m, r, dx, dg, db, geom, !training, eps);
    return {dx, dg, db};
  }
  void release() override {
    x.reset();
    gamma.reset();
    mean.reset();
    rstd.reset();
    out.reset();
    recipe.reset();
  }
};

struct Conv2dRecompute : Recompute {
  SavedTensor x, weight, bias;
  Pair stride{}, padding{}, dilation{};
  bool bf16 = false;  // the forward's precision (PrecisionGuard), reproduced exactly
  Tensor run() const override {
    const char* n = "conv2d (recompute)";
    PrecisionGuard precision(bf16);
    ConvBf16Guard inference(false);
    return conv2d(x.unpack(n), weight.unpack(n), bias.unpack(n), stride, padding, dilation);
  }
};

// ---- pooling -------------------------------------------------------------------

struct MaxPool2dBackward : Node {
  SavedTensor indices;  // int64 (N, C, ho, wo): argmax h * W + w in each plane
  SavedTensor input;    // instead of indices when the input is recomputable (a recipe)
  Pool2dGeometry geom;
  DType dtype = DType::Float32;
  const char* name() const override { return "MaxPool2dBackward"; }
  // g: (N, C, ho, wo)
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor idx;
    if (input.defined()) {
      // The argmax of the recomputed input: the same forward, the same indices.
      Tensor x = input.unpack(name());
      Tensor y = Tensor::empty({geom.n, geom.c, geom.ho, geom.wo}, dtype, x.device());
      idx = Tensor::empty(y.shape(), DType::Int64, x.device());
      backend_for(x.device()).max_pool2d_forward(x, y, idx, geom);
    } else {
      idx = indices.unpack(name());
    }
    Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty({geom.n, geom.c, geom.h, geom.w}, dtype, gc.device());
    backend_for(gc.device()).max_pool2d_backward(gc, idx, dx, geom);
    return {dx};
  }
  void release() override {
    indices.reset();
    input.reset();
  }
};

struct GlobalAvgPoolBackward : Node {
  Shape x_shape;  // (N, C, H, W); nothing else is needed
  const char* name() const override { return "AdaptiveAvgPool2dBackward"; }
  // g: (N, C, 1, 1)
  std::vector<Tensor> apply(const Tensor& g) override {
    Tensor gc = g.contiguous();
    Tensor dx = Tensor::empty(x_shape, gc.dtype(), gc.device());
    backend_for(gc.device())
        .avg_pool2d_global_backward(gc, dx, x_shape[0] * x_shape[1], x_shape[2] * x_shape[3]);
    return {dx};
  }
};

std::string pair_str(Pair p) { return str_cat("(", p[0], ", ", p[1], ")"); }

}  // namespace

Conv2dGeometry conv2d_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair stride, Pair padding,
                               Pair dilation) {
  check_defined(x, "conv2d", "input");
  check_defined(weight, "conv2d", "weight");
  check_same(x, weight, "conv2d");
  const std::string xs = shape_str(x.shape()), ws = shape_str(weight.shape());
  IPSNET_CHECK(is_floating(x.dtype()), "conv2d: expected a floating input, got ", dtype_name(x.dtype()));
  IPSNET_CHECK(x.dim() == 4 && weight.dim() == 4, "conv2d: input ", xs, " vs weight ", ws,
               ": expected a 4-D input (N, C, H, W) and a 4-D weight (O, C, kh, kw)");
  IPSNET_CHECK(x.size(1) == weight.size(1), "conv2d: input ", xs, " vs weight ", ws,
               ": channel mismatch: the input has ", x.size(1), " channels, the weight expects ",
               weight.size(1));
  IPSNET_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 &&
                   padding[0] >= 0 && padding[1] >= 0,
               "conv2d: input ", xs, " vs weight ", ws, ": expected stride >= 1, dilation >= 1 and padding >= 0, got stride ",
               pair_str(stride), ", padding ", pair_str(padding), ", dilation ", pair_str(dilation));
  IPSNET_CHECK(weight.size(0) >= 1 && weight.size(2) >= 1 && weight.size(3) >= 1, "conv2d: input ", xs,
               " vs weight ", ws, ": the weight has an empty output-channel or kernel dim");
  if (bias.defined()) {
    check_same(x, bias, "conv2d");
    IPSNET_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), "conv2d: bias ",
                 shape_str(bias.shape()), " vs weight ", ws, ": expected (", weight.size(0), ",)");
  }
  Conv2dGeometry g;
  g.n = x.size(0);
  g.c = x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  g.o = weight.size(0);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  const int64_t ekh = g.dh * (g.kh - 1) + 1, ekw = g.dw * (g.kw - 1) + 1;
  IPSNET_CHECK(ekh <= g.h + 2 * g.ph && ekw <= g.w + 2 * g.pw, "conv2d: input ", xs, " vs weight ",
               ws, ": the (dilated) kernel (", ekh, ", ", ekw, ") is larger than the padded input (",
               g.h + 2 * g.ph, ", ", g.w + 2 * g.pw, ")");
  g.ho = conv_out_size(g.h, g.kh, g.sh, g.ph, g.dh);
  g.wo = conv_out_size(g.w, g.kw, g.sw, g.pw, g.dw);
  IPSNET_CHECK(g.ho > 0 && g.wo > 0, "conv2d: input ", xs, " vs weight ", ws,
               ": non-positive output size (", g.ho, ", ", g.wo, ")");

  return g;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair stride, Pair padding,
              Pair dilation) {
  Conv2dGeometry g = conv2d_geometry(x, weight, bias, stride, padding, dilation);
  Tensor xc = detached_contiguous(x), wc = detached_contiguous(weight), bc = detached_contiguous(bias);
  Tensor y = Tensor::empty({g.n, g.o, g.ho, g.wo}, x.dtype(), x.device());
  Backend& be = backend_for(x.device());
  const bool record = any_requires_grad({&x, &weight, &bias});
  // bfloat16 compute: inference under ConvBf16Guard (the selection), or any
  // convolution under PrecisionGuard (precision: bf16); the node below keeps
  // g, so its backward runs in the precision of this forward.
  g.bf16 = ((!record && conv_bf16_enabled()) || precision_bf16_enabled()) && x.dtype() == DType::Float32 &&
           be.supports_bf16_conv();
  be.conv2d_forward(xc, wc, bc, y, g);
  if (record) {
    auto node = std::make_shared<Conv2dBackward>();
    node->geom = g;
    node->need_x = x.requires_grad();
    node->need_w = weight.requires_grad();
    node->need_b = wants_grad(bias);
    node->dtype = x.dtype();
    node->device = x.device();
    // Under precision: bf16 the weight gradient rounds x to bfloat16 anyway:
    // an intermediate x is kept in bfloat16 (the same result, half the bytes).
    if (node->need_w) node->x = g.bf16 && x.grad_fn() ? SavedTensor::bf16(xc) : SavedTensor(xc);
    if (node->need_x) node->weight = SavedTensor(wc);
    set_history(y, node, {x, weight, bias});
  }
  return y;
}

namespace {

// batch_norm and batch_norm_relu. In training mode without running stats the
// output is a pure function of (x, gamma, beta): what recomputation relies on.
Tensor batch_norm_impl(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                       const Tensor& running_var, bool training, double momentum, double eps, bool relu,
                       bool recompute) {
  check_defined(x, "batch_norm", "input");
  const std::string xs = shape_str(x.shape());
  IPSNET_CHECK(is_floating(x.dtype()), "batch_norm: expected a floating input, got ", dtype_name(x.dtype()));
  IPSNET_CHECK(x.dim() >= 2, "batch_norm: input ", xs, ": expected (N, C) or (N, C, ...)");
  BatchNormGeometry g;
  g.n = x.size(0);
  g.c = x.size(1);
  g.s = 1;
  for (int64_t d = 2; d < x.dim(); ++d) g.s *= x.size(d);
  const Shape cs{g.c};
  auto check_param = [&](const Tensor& t, const char* what) {
    if (!t.defined()) return;
    check_same(x, t, "batch_norm");
    IPSNET_CHECK(t.shape() == cs, "batch_norm: ", what, " ", shape_str(t.shape()), " vs input ", xs,
                 ": expected (", g.c, ",), one value per channel");
  };
  check_param(gamma, "weight");
  check_param(beta, "bias");
  check_param(running_mean, "running_mean");
  check_param(running_var, "running_var");
  IPSNET_CHECK(running_mean.defined() == running_var.defined(),
               "batch_norm: running_mean and running_var must both be given or both be omitted");
  IPSNET_CHECK(eps > 0, "batch_norm: eps must be positive, got ", eps);
  Backend& be = backend_for(x.device());
  Tensor xc = x.detach().contiguous();
  // precision: bf16 (as PyTorch's autocast, where the convolution's output is
  // bfloat16 and BatchNorm reads it): a recorded BatchNorm of an intermediate
  // float32 x normalises x rounded to bfloat16 and keeps only that bfloat16
  // copy for backward (and for the recipe of batch_norm_relu), so backward and
  // recomputation see exactly the forward's input.
  SavedTensor saved_x;
  const bool record = any_requires_grad({&x, &gamma, &beta});
  if (record && precision_bf16_enabled() && x.grad_fn() && be.supports_bf16_conv()) {
    saved_x = SavedTensor::bf16(xc);
    xc = saved_x.unpack("batch_norm");
  } else if (record) {
    saved_x = SavedTensor(xc);
  }
  Tensor gc = detached_contiguous(gamma), bc = detached_contiguous(beta);
  // A bfloat16 save leaves xc the fresh float32 widening of the copy, ours
  // alone: normalised in place (every backend's forward reads an element
  // before it writes it), one float32 map less beside the caller's x.
  Tensor y = saved_x.is_bf16() ? xc : Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean, rstd;
  if (training) {
    IPSNET_CHECK(g.count() > 1, "batch_norm: input ", xs,
                 ": expected more than 1 value per channel when training, got ", g.count());
    const bool update = running_mean.defined();
    if (update) {
      IPSNET_CHECK(running_mean.is_contiguous() && running_var.is_contiguous() &&
                       !running_mean.requires_grad() && !running_var.requires_grad(),
                   "batch_norm: running_mean ", shape_str(running_mean.shape()), " and running_var ",
                   shape_str(running_var.shape()),
                   " must be contiguous buffers that do not require grad (they are updated in place)");
      IPSNET_CHECK(momentum >= 0.0 && momentum <= 1.0, "batch_norm: momentum must be in [0, 1], got ", momentum);
    }
    mean = Tensor::empty(cs, x.dtype(), x.device());
    rstd = Tensor::empty(cs, x.dtype(), x.device());
    // The running-stat update is a side effect outside autograd (as in PyTorch):
    // never recorded, and running stats are never saved for backward, so
    // bumping their version cannot invalidate a saved tensor.
    be.batch_norm_forward_training(xc, gc, bc, y, mean, rstd, update ? running_mean.detach() : Tensor(),
                                   update ? running_var.detach() : Tensor(), g, momentum, eps);
    if (update) {
      running_mean.storage()->bump_version();
      running_var.storage()->bump_version();
    }
  } else {
    IPSNET_CHECK(running_mean.defined(), "batch_norm: input ", xs,
                 ": eval mode needs running_mean and running_var");
    Tensor rm = running_mean.detach().contiguous(), rv = running_var.detach().contiguous();
    be.batch_norm_forward_inference(xc, gc, bc, rm, rv, y, g, eps);
    if (any_requires_grad({&x, &gamma, &beta})) {
      // Backward sees the statistics of this forward even if the buffers change later.
      NoGradGuard ng;
      mean = rm.clone();
      rstd = reciprocal(sqrt(add(rv, eps)));
    }
  }
  if (relu) be.unary(math::UnaryOp::Relu, y, y, 0.0);
  if (record) {
    auto node = std::make_shared<BatchNormBackward>();
    node->geom = g;
    node->x_shape = x.shape();
    node->training = training;
    node->eps = eps;
    node->need_x = x.requires_grad();
    node->need_gamma = wants_grad(gamma);
    node->need_beta = wants_grad(beta);
    node->relu = relu;
    const bool recomputed = relu && recompute;
    // x is read for dgamma, and for dx only with batch statistics; the
    // recomputed ReLU mask reads it too.
    if (node->need_gamma || (training && node->need_x) || recomputed) node->x = saved_x;
    if (node->need_x) node->gamma = SavedTensor(gc);
    node->mean = SavedTensor(mean);
    node->rstd = SavedTensor(rstd);
    if (recomputed) {
      auto recipe = std::make_shared<BatchNormReluRecompute>();
      recipe->x = saved_x;
      recipe->gamma = SavedTensor(gc);
      recipe->beta = SavedTensor(bc);
      if (!training) {
        recipe->running_mean = SavedTensor(mean);
        recipe->running_var = SavedTensor(running_var.detach().clone());
      }
      recipe->training = training;
      recipe->eps = eps;
      set_recompute(y, recipe);
      node->recipe = recipe;
    } else if (relu) {
      // Backward reads only the sign of y (the ReLU mask): kept in bfloat16
      // under precision: bf16 (see ops::relu).
      node->out = saved_x.is_bf16() ? SavedTensor::bf16(y) : SavedTensor(y);
    }
    set_history(y, node, {x, gamma, beta});
  }
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  return batch_norm_impl(x, gamma, beta, running_mean, running_var, training, momentum, eps, false, false);
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                       const Tensor& running_var, bool training, double momentum, double eps, bool recompute) {
  return batch_norm_impl(x, gamma, beta, running_mean, running_var, training, momentum, eps, true, recompute);
}

Tensor conv2d_recomputed(const Tensor& x, const Tensor& weight, const Tensor& bias, Pair stride, Pair padding,
                         Pair dilation) {
  Tensor y = conv2d(x, weight, bias, stride, padding, dilation);
  if (y.requires_grad()) {
    auto recipe = std::make_shared<Conv2dRecompute>();
    recipe->x = SavedTensor(detached_contiguous(x));
    recipe->weight = SavedTensor(detached_contiguous(weight));
    recipe->bias = SavedTensor(detached_contiguous(bias));
    recipe->stride = stride;
    recipe->padding = padding;
    recipe->dilation = dilation;
    recipe->bf16 = precision_bf16_enabled();
    set_recompute(y, recipe);
  }
  return y;
}

Pool2dGeometry max_pool2d_geometry(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  check_defined(x, "max_pool2d", "input");
  const std::string xs = shape_str(x.shape());
  IPSNET_CHECK(is_floating(x.dtype()), "max_pool2d: expected a floating input, got ", dtype_name(x.dtype()));
  IPSNET_CHECK(x.dim() == 4, "max_pool2d: input ", xs, ": expected a 4-D input (N, C, H, W)");
  IPSNET_CHECK(kernel[0] >= 1 && kernel[1] >= 1 && stride[0] >= 1 && stride[1] >= 1,
               "max_pool2d: input ", xs, ": expected kernel >= 1 and stride >= 1, got kernel ",
               pair_str(kernel), ", stride ", pair_str(stride));
  IPSNET_CHECK(padding[0] >= 0 && padding[1] >= 0 && 2 * padding[0] <= kernel[0] &&
                   2 * padding[1] <= kernel[1],
               "max_pool2d: input ", xs, ": padding ", pair_str(padding),
               " must be >= 0 and at most half the kernel ", pair_str(kernel));
  Pool2dGeometry g;
  g.n = x.size(0);
  g.c = x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  g.kh = kernel[0];
  g.kw = kernel[1];
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  IPSNET_CHECK(g.kh <= g.h + 2 * g.ph && g.kw <= g.w + 2 * g.pw, "max_pool2d: input ", xs, " vs kernel ",
               pair_str(kernel), ": the kernel is larger than the padded input (", g.h + 2 * g.ph, ", ",
               g.w + 2 * g.pw, ")");
  g.ho = conv_out_size(g.h, g.kh, g.sh, g.ph, 1);
  g.wo = conv_out_size(g.w, g.kw, g.sw, g.pw, 1);
  IPSNET_CHECK(g.ho > 0 && g.wo > 0, "max_pool2d: input ", xs, " vs kernel ", pair_str(kernel),
               ": non-positive output size (", g.ho, ", ", g.wo, ")");
  return g;
}

Tensor max_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  Pool2dGeometry g = max_pool2d_geometry(x, kernel, stride, padding);
  Tensor xc = x.detach().contiguous();
  Tensor y = Tensor::empty({g.n, g.c, g.ho, g.wo}, x.dtype(), x.device());
  const bool record = any_requires_grad({&x});
  // A recomputable input (activation recomputation) is kept as its recipe and
  // backward recomputes the argmax; otherwise the int64 indices are kept.
  SavedTensor saved_input = record ? SavedTensor(xc) : SavedTensor();
  const bool from_input = saved_input.recomputed();
  Tensor idx = record && !from_input ? Tensor::empty(y.shape(), DType::Int64, x.device()) : Tensor();
  backend_for(x.device()).max_pool2d_forward(xc, y, idx, g);
  if (record) {
    auto node = std::make_shared<MaxPool2dBackward>();
    if (from_input)
      node->input = saved_input;
    else
      node->indices = SavedTensor(idx);
    node->geom = g;
    node->dtype = x.dtype();
    set_history(y, node, {x});
  }
  return y;
}

Tensor adaptive_avg_pool2d_1x1(const Tensor& x) {
  check_defined(x, "adaptive_avg_pool2d_1x1", "input");
  const std::string xs = shape_str(x.shape());
  IPSNET_CHECK(is_floating(x.dtype()), "adaptive_avg_pool2d_1x1: expected a floating input, got ",
               dtype_name(x.dtype()));
  IPSNET_CHECK(x.dim() == 4, "adaptive_avg_pool2d_1x1: input ", xs, ": expected a 4-D input (N, C, H, W)");
  IPSNET_CHECK(x.size(2) > 0 && x.size(3) > 0, "adaptive_avg_pool2d_1x1: input ", xs,
               ": empty spatial dims");
  Tensor xc = x.detach().contiguous();
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), 1, 1}, x.dtype(), x.device());
  if (planes > 0) backend_for(x.device()).avg_pool2d_global_forward(xc, y, planes, hw);
  if (any_requires_grad({&x})) {
    auto node = std::make_shared<GlobalAvgPoolBackward>();
    node->x_shape = x.shape();
    set_history(y, node, {x});
  }
  return y;
}

}  // namespace ops
}  // namespace ipsnet
