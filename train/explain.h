// Explanation maps (Proxy Attention, issue 16; docs/proxy_attention.md):
// where a prediction comes from in an image, as a (H, W) map in [0, 1] at
// the full size of the stored image.
//   full-image CNN   Grad-CAM, Grad-CAM++ (as the pytorch-grad-cam library
//                    computes them) and CAM of the last convolutional stage
//   IPS, ATS         the method's own per-patch scores spread over the pixels
// The pure parts work on host copies in double; cnn_explanation runs the
// gradient pass on a "features -> global average pooling -> Linear" network.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/math/patches.h"
#include "layers/linear.h"
#include "models/resnet.h"

namespace ipsnet {
namespace train {

/// One line unless `kind` is one of `kinds` (a method's explanations()):
/// "method 'X' has no explanation map 'K' (it has: a, b)" or "(it has none)".
void check_explanation_kind(const std::string& method, const std::vector<std::string>& kinds,
                            const std::string& kind);

/// Grad-CAM channel weights (Selvaraju et al.): the mean over space of the
/// gradient, w[b,k] = 1/(h w) sum_ij g[b,k,i,j].
/// grads: (B, K, h, w) any float dtype/device -> (B, K) float64 CPU.
Tensor gradcam_weights(const Tensor& grads);

/// Grad-CAM++ channel weights exactly as pytorch-grad-cam computes them:
/// g2 = g^2, g3 = g^3, sumA[b,k] = sum_ij A[b,k,i,j],
/// a_ij = g2 / (2 g2 + sumA g3 + 1e-6), a_ij = 0 where g == 0,
/// w[b,k] = sum_ij relu(g_ij) a_ij.
/// acts, grads: (B, K, h, w) -> (B, K) float64 CPU.
Tensor gradcam_pp_weights(const Tensor& acts, const Tensor& grads);

/// cam[b,i,j] = sum_k w[b,k] A[b,k,i,j], then max(cam, 0) when relu (Grad-CAM,
/// Grad-CAM++) or as it is (CAM, Zhou et al., w = the head's row of the class).
/// acts: (B, K, h, w), weights: (B, K) -> (B, h, w) float64 CPU.
Tensor weighted_cam(const Tensor& acts, const Tensor& weights, bool relu);

/// pytorch-grad-cam's scale_cam_image per image: m' = (m - min) /
/// (1e-7 + max(m - min)) in float32, then a bilinear resize to H x W with
/// half-pixel centres (align_corners=False, edges clamped: cv2 INTER_LINEAR,
/// data::resize_bilinear). cams: (B, h, w) -> (B, H, W) float32 CPU in [0, 1).
Tensor scale_cam_image(const Tensor& cams, int64_t H, int64_t W);

/// Per-instance scores over the pixels: pixel (y, x) gets the largest score
/// of the patches of `grid` that cover it (the stride may be smaller than
/// the patch), a pixel no patch covers the smallest score of the image; then
/// exactly min-max normalised, (m - min) / (max - min) (an all-equal map is
/// all 0). scores: (B, grid.count()) -> (B, H, W) float32 CPU.
Tensor spread_scores(const Tensor& scores, const PatchGrid& grid);

/// The Grad-CAM family on a network "encoder.features -> global average
/// pooling -> Linear head" (the full-image CNN): A = encoder.features(x)
/// without gradients; A' = A as a leaf requiring grad; S = sum_b
/// head(mean_ij A')[b, classes[b]]; dS/dA' by backward; kind "gradcam" /
/// "gradcam_pp" weights as above, "cam" the head's weight rows (no
/// gradients); then scale_cam_image to H x W. The caller sets eval mode. The
/// parameters' gradients are left exactly as they were (the head's
/// parameters do not require grad during the pass). Works with grad mode on
/// or off and under PrecisionGuard. -> (B, H, W) float32 CPU.
Tensor cnn_explanation(ResNet& encoder, Linear& head, const Tensor& x, const std::string& kind,
                       const std::vector<int64_t>& classes, int64_t H, int64_t W);

}  // namespace train
}  // namespace ipsnet
