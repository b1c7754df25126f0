#include "models/resnet.h"

#include <functional>

namespace ipsnet {

namespace {

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
  Tensor out = ops::relu(bn1_->forward(conv1_->forward(x)));
  out = bn2_->forward(conv2_->forward(out));
  Tensor identity = downsample_ ? downsample_->forward(x) : x;
  return ops::relu(out + identity);
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
  Tensor out = ops::relu(bn1_->forward(conv1_->forward(x)));
  out = ops::relu(bn2_->forward(conv2_->forward(out)));
  out = bn3_->forward(conv3_->forward(out));
  Tensor identity = downsample_ ? downsample_->forward(x) : x;
  return ops::relu(out + identity);
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
  check_defined(x, "ResNet", "x");
  IPSNET_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels(), "ResNet: input ", shape_str(x.shape()),
               " must be (N, ", options_.in_channels(), ", h, w)");
  Tensor y = ops::relu(bn1_->forward(conv1_->forward(x)));
  y = ops::max_pool2d(y, {3, 3}, {2, 2}, {1, 1});
  for (auto& layer : layers_) y = layer->forward(y);
  return ops::adaptive_avg_pool2d_1x1(y).flatten(1);  // (N, C_out)
}

void ResNet::set_bn_stats_frozen(bool on) {
  for_each_bn(*this, [on](BatchNormBase& bn) { bn.freeze_stats(on); });
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
