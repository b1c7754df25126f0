// Image resizers used by the dataset generators (float images in [0, 1],
// row-major; results clamped to [0, 1]).
#pragma once
#include <cstdint>
#include <vector>

namespace ipsnet {
namespace data {

/// Area-interpolation resize (every output pixel averages the input area it
/// covers; enlarging replicates pixels like OpenCV's INTER_AREA).
void resize_area(const float* src, int64_t in_h, int64_t in_w, float* dst, int64_t out_h, int64_t out_w);
/// Bilinear resize with half-pixel centres (align_corners=False, edge
/// clamped), like torchvision's Resize of a PIL image when enlarging (PIL
/// additionally rounds to 8 bits; this keeps float values in [0, 1]).
void resize_bilinear(const float* src, int64_t in_h, int64_t in_w, float* dst, int64_t out_h, int64_t out_w);
/// skimage-style rescale: Gaussian anti-aliasing (sigma = (1/f - 1)/2,
/// mirror boundary) then bilinear sampling; output side round(side * scale).
std::vector<float> rescale_antialias(const float* src, int64_t side, double scale, int64_t* out_side);

}  // namespace data
}  // namespace ipsnet
