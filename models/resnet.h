// torchvision-style ResNet patch encoders (SPEC section 2).
//
// ResNet-18/34 use BasicBlock, ResNet-50 uses Bottleneck with the stride on
// the 3x3 conv (torchvision v1.5). The encoder is conv1, bn1, relu, maxpool,
// layer1, layer2 [, layer3, layer4], global average pooling; no fc. Parameter
// and buffer names are exactly torchvision's (`conv1.weight`,
// `bn1.running_mean`, `layer1.0.conv1.weight`,
// `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.running_var`, ...),
// so a torchvision state dict (without its `fc.*` entries, or loaded
// non-strictly) loads directly.
#pragma once
#include <memory>

#include "layers/layers.h"

namespace ipsnet {

struct ResNetOptions {
  /// 18, 34 or 50.
  IPSNET_ARG(int, depth) = 18;
  /// Input channels of conv1 (1 for Megapixel MNIST, 3 for RGB).
  IPSNET_ARG(int64_t, in_channels) = 3;
  /// 2: stop after layer2; 4: all four stages.
  IPSNET_ARG(int, n_res_blocks) = 4;
  IPSNET_ARG(DType, dtype) = DType::Float32;
};

/// torchvision BasicBlock: children conv1, bn1, relu, conv2, bn2[, downsample].
class BasicBlock : public Module {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlock(int64_t inplanes, int64_t planes, int64_t stride, bool downsample, Generator& gen, DType dtype);
  /// x: (N, inplanes, H, W) -> (N, planes, H/stride, W/stride)
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Sequential> downsample_;  // Conv2d 1x1 + BatchNorm2d, or null
  bool fold_bn_ = false;                    // set by ResNet::set_fold_bn
  bool recompute_ = true;                   // set by ResNet::set_recompute
};

/// torchvision Bottleneck (v1.5): children conv1 (1x1), bn1, conv2 (3x3,
/// stride), bn2, conv3 (1x1, planes*4), bn3, relu[, downsample].
class Bottleneck : public Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t inplanes, int64_t planes, int64_t stride, bool downsample, Generator& gen, DType dtype);
  /// x: (N, inplanes, H, W) -> (N, 4*planes, H/stride, W/stride)
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<Sequential> downsample_;  // or null
  bool fold_bn_ = false;                    // set by ResNet::set_fold_bn
  bool recompute_ = true;                   // set by ResNet::set_recompute
};

/// The truncated ResNet encoder. Initialisation as torchvision: convs
/// kaiming_normal_(fan_out, relu), BatchNorm weight 1, bias 0 (drawn from `gen`).
class ResNet : public Module {
 public:
  ResNet(const ResNetOptions& options, Generator& gen);
  /// x: (N, C_in, h, w) -> (N, out_channels()): global average pooling of features(x).
  Tensor forward(const Tensor& x) override;
  /// x: (N, C_in, h, w) -> (N, out_channels(), h', w'): the last stage's output
  /// before the pooling (h' = ceil(h / 8) for 2 stages, ceil(h / 32) for 4;
  /// the layer Grad-CAM and CAM explain, train/explain.h).
  Tensor features(const Tensor& x);
  /// 128 (18/34 to layer2), 512 (18/34 to layer4 or 50 to layer2), 2048 (50 to layer4).
  int64_t out_channels() const { return out_channels_; }
  const ResNetOptions& options() const { return options_; }

  /// Frozen-backbone strategy: freezes conv1, bn1 and every stage except the
  /// last `n_trainable_stages` (0: everything), and freezes the running
  /// statistics of the BatchNorms in the frozen part (they normalise with
  /// their pretrained statistics even in training mode and never update).
  /// `unfreeze()` + `set_bn_stats_frozen(false)` undo it.
  void freeze_backbone(int n_trainable_stages = 0);
  /// Sets BatchNorm::freeze_stats on every BatchNorm of the encoder.
  void set_bn_stats_frozen(bool on);

  /// Exact shortcut for no-grad eval-mode forwards (IPS selection): every
  /// conv + BatchNorm pair runs as one conv with the BatchNorm folded in,
  /// w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
  /// The folded weights are recomputed from the current parameters and running
  /// statistics at every forward (cheap next to the convolutions), so they are
  /// never stale after an optimizer step. Training-mode or grad-enabled
  /// forwards are unaffected. Off by default.
  void set_fold_bn(bool on);
  bool fold_bn() const { return fold_bn_; }

  /// Activation recomputation in grad-recording forwards (on by default):
  /// every BatchNorm + ReLU runs as one op whose output the next convolution
  /// does not keep (backward recomputes it from the BatchNorm's saved input,
  /// one elementwise pass), the stem convolution's output is recomputed from
  /// the patch (conv1 is 4 % of the encoder's FLOPs, its output 64x the
  /// patch), and the max-pool after it recomputes its argmax. Gradients are
  /// bit for bit those of the plain forward; the saved activations per 50x50
  /// patch of the 2-stage ResNet-18 drop from 1007 to 477 KiB (model;
  /// docs/memory_model.md).
  void set_recompute(bool on);
  bool recompute() const { return recompute_; }

  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::vector<std::shared_ptr<Sequential>> layers_;  // layer1..layer{n_res_blocks}

 private:
  void propagate_block_flags();  // fold_bn_ and recompute_ into every block
  Tensor run_stages(Tensor y);   // the stages after the stem, block by block
  ResNetOptions options_;
  int64_t out_channels_ = 0;
  bool fold_bn_ = false;
  bool recompute_ = true;
};

}  // namespace ipsnet
