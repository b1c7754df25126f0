// Attention sampling (ATS; Katharopoulos and Fleuret, ICML 2019; SPEC
// section 7), the network half and its differentiable pieces. docs/ats.md
// derives the formulas.
//
//   attention  a = smooth(softmax(net(x_low) over all h*w positions)),
//              smooth(a) = a (1 - 1e-5) + 1e-5 / K, K = h*w
//   sample     n positions ~ a: without replacement (Gumbel top-k, default)
//              or with replacement (inverse CDF); or the top n at evaluation
//   patches    cut from the high-resolution image at the scaled positions
//   features   f = L2-normalise(feature_net(patch))           (B, n, D)
//   expected   F ~ E_a[f], the original's estimator and gradients (expected())
//
// Children and parameter names (PyTorch nn.Sequential style):
//   attention.{0,2,4}.{weight,bias}   Conv 3x3 C->8 tanh, 8->8 tanh, 8->1 (same padding)
//   feature.{0,2,4,6}.{weight,bias}   Conv 7x7 C->32, 3x Conv 3x3 32->32, ReLU after
//                                     each (valid padding), then global max pool
//   feature.*                         or a ResNet (torchvision names), globally averaged
#pragma once
#include <memory>
#include <utility>
#include <vector>

#include "engine/math/patches.h"
#include "layers/layers.h"
#include "models/resnet.h"

namespace ipsnet {
namespace ats {

/// The original's SampleSoftmax smoothing.
constexpr double kSmooth = 1e-5;

/// The expectation of the features under the attention, estimated from the
/// sampled positions (uniform weights 1/n), as a differentiable op whose
/// backward is the original's (ats/core/expectation.py):
///   attention: (B, n) the attention of the sampled positions, in sampling order
///   features:  (B, n, D) their features
///   -> (B, D)
/// replace = true (samples i.i.d. from a):
///   F = sum_i w f_i,  dF/df_i = w,  "dF/da_i" = w <g, f_i> / a_i
/// replace = false (samples drawn one after another without replacement):
///   pm_i = 1 - sum_{j<i} a_j,  F_i = sum_{j<i} a_j f_j + pm_i f_i,  F = sum_i w F_i
///   dF/df_i = w (pm_i + (n-1-i) a_i)   (the exact derivative)
///   "dF/da_i" = w <g, F_i pm_i / a_i + sum_{j<i} f_j - i f_i>   (the original's)
Tensor expected(const Tensor& attention, const Tensor& features, bool replace);

/// n positions per row of a (B, K) distribution (CPU, any floating dtype),
/// (B, n) int64 in drawing order. Without replacement: top-n of
/// log a + Gumbel noise (u from gen, row-major); with replacement: n
/// inverse-CDF draws per row. Throws when n > K without replacement.
Tensor sample(const Tensor& attention, int64_t n, bool replace, Generator& gen);
/// The n most attended positions per row (ties: lower index), (B, n) int64.
Tensor top_positions(const Tensor& attention, int64_t n);

/// The original's multinomial entropy regulariser on a (B, K):
/// strength * sum(a log(a + 1e-6)) / B (positive strength raises the entropy).
Tensor entropy_regularizer(const Tensor& attention, double strength);

/// Top-left corners in an (H, W) image of the patches of side p at positions
/// pos of an (h, w) view (flat, row-major), as the original maps them
/// (ats/data/from_tensors.py, receptive field 0): step = H / h per axis,
/// corner = round(s * step + step / 2 - p / 2), rounding half to even, in
/// float32 like the original. Corners may lie outside (the patch is
/// zero-padded there).
std::vector<std::pair<int64_t, int64_t>> patch_corners(const std::vector<int64_t>& pos, int64_t h, int64_t w,
                                                       int64_t H, int64_t W, int64_t p);

/// The cell of a patch grid (row-major index) that holds the centre of the
/// patch at each position of pos (as patch_corners maps them: centre =
/// s * step + step / 2); centres past the last cell go to the last one.
std::vector<int64_t> grid_cells(const std::vector<int64_t>& pos, int64_t h, int64_t w, const PatchGrid& grid);

}  // namespace ats

struct ATSNetOptions {
  IPSNET_ARG(int64_t, in_channels) = 1;
  /// "ats": the original's Megapixel MNIST feature net; "resnet18/34/50": a ResNet of ours.
  IPSNET_ARG(std::string, features) = "ats";
  IPSNET_ARG(int, n_res_blocks) = 2;
  /// Keras's initialisation (glorot uniform weights, zero biases) instead of PyTorch's.
  IPSNET_ARG(bool, keras_init) = true;
};

class ATSNet : public Module {
 public:
  ATSNet(const ATSNetOptions& options, Generator& gen);
  /// x_low: (B, C, h, w) -> the smoothed attention distribution (B, h*w)
  Tensor attention(const Tensor& x_low);
  /// patches: (m, C, p, p) -> L2-normalised features (m, D)
  Tensor features(const Tensor& patches);
  /// Feature width D.
  int64_t feature_dim() const { return feature_dim_; }

  std::shared_ptr<Sequential> attention_;
  std::shared_ptr<Module> feature_;  // Sequential (ats) or ResNet

 private:
  ATSNetOptions options_;
  bool resnet_ = false;
  int64_t feature_dim_ = 0;
};

/// Keras's glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out)).
void glorot_uniform_(Tensor& weight, Generator& gen);

}  // namespace ipsnet
