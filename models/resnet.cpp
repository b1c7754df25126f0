#include "models/resnet.h"

#include <functional>

namespace ipsnet {

namespace {

// Patches per chunk of the bf16 stem (ops::conv_bn_relu_pool): its scratch is
// a few 64 x (h/2)^2 maps per patch of the chunk (about 5 MiB at h = 50).
constexpr int64_t kStemChunk = 32;

// A bias-free conv with torchvision's kaiming_normal_(fan_out, relu) init.
std::shared_ptr<Conv2d> make_conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, Generator& gen,
                                  DType dtype) {
  auto conv = std::make_shared<Conv2d>(
      Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false).dtype(dtype), gen);
  NoGradGuard ng;
  conv->weight_.copy_(init::kaiming_normal_fan_out(conv->weight_.shape(), gen, dtype));
  return conv;
}

std::shared_ptr<BatchNorm2d> make_bn(int64_t c, DType dtype) {
  return std::make_shared<BatchNorm2d>(BatchNormOptions(c).dtype(dtype));
}

std::shared_ptr<Sequential> make_downsample(int64_t in, int64_t out, int64_t stride, Generator& gen, DType dtype) {
  auto ds = std::make_shared<Sequential>();
  ds->push_back(make_conv(in, out, 1, stride, 0, gen, dtype));
  ds->push_back(make_bn(out, dtype));
  return ds;
}

void for_each_bn(Module& m, const std::function<void(BatchNormBase&)>& f) {
  if (auto* bn = dynamic_cast<BatchNormBase*>(&m)) f(*bn);
  for (auto& c : m.named_children()) for_each_bn(*c.second, f);
}

// True when a block folds its BatchNorms: switched on, eval mode, no autograd.
bool folding(bool fold_bn, bool training) { return fold_bn && !training && !grad_enabled(); }

// bn(conv(x)) with eval-mode BatchNorm folded into the convolution:
//   s = gamma / sqrt(running_var + eps)            (O)
//   w' = w * s[o]                                  (O, I, kh, kw)
//   b' = beta + (b - running_mean) * s             (O)
// Falls back to the two layers when the BatchNorm has no running statistics.
// x: (N, I, H, W) -> (N, O, Ho, Wo)
Tensor conv_bn(Conv2d& conv, BatchNormBase& bn, const Tensor& x, bool fold) {
  if (!fold || !bn.running_mean_.defined()) return bn.forward(conv.forward(x));
  const int64_t O = conv.weight_.size(0);
  Tensor s = ops::div(Tensor::ones({O}, conv.weight_.dtype(), conv.weight_.device()),
                      ops::sqrt(ops::add(bn.running_var_, bn.options().eps())));  // (O)
  if (bn.weight_.defined()) s = ops::mul(s, bn.weight_);
  Tensor w = ops::mul(conv.weight_, s.reshape({O, 1, 1, 1}));  // (O, I, kh, kw)
  Tensor shift = conv.bias_.defined() ? ops::sub(conv.bias_, bn.running_mean_) : ops::neg(bn.running_mean_);
  Tensor b = ops::mul(shift, s);  // (O)
  if (bn.bias_.defined()) b = ops::add(b, bn.bias_);
  const Conv2dOptions& o = conv.options();
  return ops::conv2d(x, w, b, o.stride(), o.padding(), o.dilation());
}

// relu(bn(conv(x))): folded, or with BatchNorm and ReLU as one op
// (ops::batch_norm_relu; recompute: the output is not kept for backward).
Tensor conv_bn_relu(Conv2d& conv, BatchNormBase& bn, const Tensor& x, bool fold, bool recompute) {
  if (fold && bn.running_mean_.defined()) return ops::relu(conv_bn(conv, bn, x, true));
  return bn.forward_relu(conv.forward(x), recompute);
}

// The downsample branch (Conv2d 1x1 + BatchNorm2d) with optional folding.
Tensor downsample_forward(Sequential& ds, const Tensor& x, bool fold) {
  auto* conv = dynamic_cast<Conv2d*>(ds[0].get());
  auto* bn = dynamic_cast<BatchNormBase*>(ds[1].get());
  if (!fold || conv == nullptr || bn == nullptr) return ds.forward(x);
  return conv_bn(*conv, *bn, x, true);
}

// relu(out + identity), the two addends dropped before the ReLU allocates
// (two maps less at the forward's peak, which is a block's end).
Tensor residual_relu(Tensor out, Tensor identity) {
  Tensor sum = out + identity;
  out = Tensor();
  identity = Tensor();
  return ops::relu(sum);
}

}  // namespace

BasicBlock::BasicBlock(int64_t inplanes, int64_t planes, int64_t stride, bool downsample, Generator& gen,
                       DType dtype)
    : Module("BasicBlock") {
  conv1_ = register_module("conv1", make_conv(inplanes, planes, 3, stride, 1, gen, dtype));
  bn1_ = register_module("bn1", make_bn(planes, dtype));
  register_module("relu", std::make_shared<ReLU>());
  conv2_ = register_module("conv2", make_conv(planes, planes, 3, 1, 1, gen, dtype));
  bn2_ = register_module("bn2", make_bn(planes, dtype));
  if (downsample) downsample_ = register_module("downsample", make_downsample(inplanes, planes, stride, gen, dtype));
}

Tensor BasicBlock::forward(const Tensor& x) {
  const bool fold = folding(fold_bn_, training_);
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x, fold, recompute_);
  out = conv_bn(*conv2_, *bn2_, out, fold);
  Tensor identity = downsample_ ? downsample_forward(*downsample_, x, fold) : x;
  return residual_relu(std::move(out), std::move(identity));
}

Bottleneck::Bottleneck(int64_t inplanes, int64_t planes, int64_t stride, bool downsample, Generator& gen,
                       DType dtype)
    : Module("Bottleneck") {
  conv1_ = register_module("conv1", make_conv(inplanes, planes, 1, 1, 0, gen, dtype));
  bn1_ = register_module("bn1", make_bn(planes, dtype));
  conv2_ = register_module("conv2", make_conv(planes, planes, 3, stride, 1, gen, dtype));
  bn2_ = register_module("bn2", make_bn(planes, dtype));
  conv3_ = register_module("conv3", make_conv(planes, planes * kExpansion, 1, 1, 0, gen, dtype));
  bn3_ = register_module("bn3", make_bn(planes * kExpansion, dtype));
  register_module("relu", std::make_shared<ReLU>());
  if (downsample)
    downsample_ =
        register_module("downsample", make_downsample(inplanes, planes * kExpansion, stride, gen, dtype));
}

Tensor Bottleneck::forward(const Tensor& x) {
  const bool fold = folding(fold_bn_, training_);
  Tensor out = conv_bn_relu(*conv1_, *bn1_, x, fold, recompute_);
  out = conv_bn_relu(*conv2_, *bn2_, out, fold, recompute_);
  out = conv_bn(*conv3_, *bn3_, out, fold);
  Tensor identity = downsample_ ? downsample_forward(*downsample_, x, fold) : x;
  return residual_relu(std::move(out), std::move(identity));
}

ResNet::ResNet(const ResNetOptions& o, Generator& gen) : Module("ResNet"), options_(o) {
  IPSNET_CHECK(o.depth() == 18 || o.depth() == 34 || o.depth() == 50, "ResNet: depth must be 18, 34 or 50, got ",
               o.depth());
  IPSNET_CHECK(o.n_res_blocks() == 2 || o.n_res_blocks() == 4, "ResNet: n_res_blocks must be 2 or 4, got ",
               o.n_res_blocks());
  IPSNET_CHECK(o.in_channels() > 0, "ResNet: in_channels must be positive, got ", o.in_channels());
  const bool bottleneck = o.depth() == 50;
  const int64_t expansion = bottleneck ? Bottleneck::kExpansion : BasicBlock::kExpansion;
  const int blocks[4] = {o.depth() == 18 ? 2 : 3, o.depth() == 18 ? 2 : 4, o.depth() == 18 ? 2 : 6,
                         o.depth() == 18 ? 2 : 3};
  conv1_ = register_module("conv1", make_conv(o.in_channels(), 64, 7, 2, 3, gen, o.dtype()));
  bn1_ = register_module("bn1", make_bn(64, o.dtype()));
  register_module("relu", std::make_shared<ReLU>());
  register_module("maxpool", std::make_shared<MaxPool2d>(MaxPool2dOptions(3).stride(2).padding(1)));
  int64_t inplanes = 64;
  for (int s = 0; s < o.n_res_blocks(); ++s) {
    const int64_t planes = 64 << s;
    const int64_t stride = s == 0 ? 1 : 2;
    auto layer = std::make_shared<Sequential>();
    for (int b = 0; b < blocks[s]; ++b) {
      const int64_t st = b == 0 ? stride : 1;
      const bool ds = b == 0 && (stride != 1 || inplanes != planes * expansion);
      if (bottleneck)
        layer->push_back(std::make_shared<Bottleneck>(inplanes, planes, st, ds, gen, o.dtype()));
      else
        layer->push_back(std::make_shared<BasicBlock>(inplanes, planes, st, ds, gen, o.dtype()));
      inplanes = planes * expansion;
    }
    layers_.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
  register_module("avgpool", std::make_shared<AdaptiveAvgPool2d>(true));
  out_channels_ = inplanes;
}

Tensor ResNet::forward(const Tensor& x) {
  return ops::adaptive_avg_pool2d_1x1(features(x)).flatten(1);  // (N, C_out)
}

Tensor ResNet::features(const Tensor& x) {
  check_defined(x, "ResNet", "x");
  IPSNET_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels(), "ResNet: input ", shape_str(x.shape()),
               " must be (N, ", options_.in_channels(), ", h, w)");
  const bool fold = folding(fold_bn_, training_);
  Tensor y;
  const Conv2dOptions& o = conv1_->options();
  // Convolutions in bfloat16: training under precision: bf16, or a no-grad
  // pass under ConvBf16Guard (the selection's).
  const bool bf16_convs = precision_bf16_enabled() || (!grad_enabled() && conv_bf16_enabled());
  if (bf16_convs && !fold && (recompute_ || !grad_enabled()) && !conv1_->bias_.defined() &&
      o.dilation() == ops::Pair{1, 1}) {
    // The stem (conv, BatchNorm, ReLU, max pool) as one op that works through
    // kStemChunk patches at a time: its conv-sized maps, the widest of the
    // encoder, never exist for the whole batch (training's forward and
    // backward, the selection's no-grad passes; docs/memory_model.md).
    // float32 keeps the composed ops below, unchanged bit for bit.
    y = bn1_->forward_stem(x, conv1_->weight_, o.stride(), o.padding(), {3, 3}, {2, 2}, {1, 1}, kStemChunk);
    if (y.defined()) return run_stages(std::move(y));
  }
  if (recompute_ && !fold && grad_enabled()) {
    // The stem's output is recomputed from the patch in backward.
    y = bn1_->forward_relu(
        ops::conv2d_recomputed(x, conv1_->weight_, conv1_->bias_, o.stride(), o.padding(), o.dilation()), true);
  } else {
    y = conv_bn_relu(*conv1_, *bn1_, x, fold, recompute_);
  }
  y = ops::max_pool2d(y, {3, 3}, {2, 2}, {1, 1});  // (drops the stem's conv-sized map)
  return run_stages(std::move(y));
}

Tensor ResNet::run_stages(Tensor y) {
  // Block by block rather than through each stage's Sequential, whose caller
  // would hold the stage's input to its end: here each block's input is
  // dropped as soon as its output exists (one map less at the peak).
  for (auto& layer : layers_)
    for (size_t i = 0; i < layer->size(); ++i) y = (*layer)[i]->forward(y);
  return y;  // (N, C_out, h', w')
}

void ResNet::set_bn_stats_frozen(bool on) {
  for_each_bn(*this, [on](BatchNormBase& bn) { bn.freeze_stats(on); });
}

void ResNet::set_fold_bn(bool on) {
  fold_bn_ = on;
  propagate_block_flags();
}

void ResNet::set_recompute(bool on) {
  recompute_ = on;
  propagate_block_flags();
}

void ResNet::propagate_block_flags() {
  for (auto& layer : layers_)
    for (size_t i = 0; i < layer->size(); ++i) {
      if (auto* b = dynamic_cast<BasicBlock*>((*layer)[i].get())) {
        b->fold_bn_ = fold_bn_;
        b->recompute_ = recompute_;
      }
      if (auto* b = dynamic_cast<Bottleneck*>((*layer)[i].get())) {
        b->fold_bn_ = fold_bn_;
        b->recompute_ = recompute_;
      }
    }
}

void ResNet::freeze_backbone(int n_trainable_stages) {
  const int n = static_cast<int>(layers_.size());
  IPSNET_CHECK(n_trainable_stages >= 0 && n_trainable_stages <= n, "ResNet::freeze_backbone: n_trainable_stages ",
               n_trainable_stages, " must be in [0, ", n, "]");
  std::vector<Module*> frozen = {conv1_.get(), bn1_.get()};
  for (int s = 0; s < n - n_trainable_stages; ++s) frozen.push_back(layers_[static_cast<size_t>(s)].get());
  for (Module* m : frozen) {
    m->freeze();
    for_each_bn(*m, [](BatchNormBase& bn) { bn.freeze_stats(true); });
  }
}

}  // namespace ipsnet
