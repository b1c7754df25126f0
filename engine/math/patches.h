// Patch extraction body shared by the CPU loop (engine/backend/cpu/cpu_patches.cpp)
// and the CUDA kernel (cuda/kernels/index.cu).
//
// An image (C, H, W) is cut into a row-major grid of patches of (ph, pw) with
// stride (sh, sw): grid_h = (H - ph) / sh + 1, grid_w = (W - pw) / sw + 1,
// patch p has its top-left corner at ((p / grid_w) sh, (p % grid_w) sw).
#pragma once
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace math {

/// Offset within one image (C, H, W) of element (c, y, x) of patch p.
IPSNET_HD int64_t patch_source_offset(int64_t p, int64_t c, int64_t y, int64_t x, int64_t h, int64_t w,
                                      int64_t sh, int64_t sw, int64_t grid_w) {
  const int64_t top = (p / grid_w) * sh, left = (p % grid_w) * sw;
  return (c * h + top + y) * w + left + x;
}

}  // namespace math
}  // namespace ipsnet
