// The patch grid: ipsnet's one description of how an image is cut into
// patches, shared by the data sources (lazy region reads), the selection,
// the attention maps, the CPU loop (engine/backend/cpu/cpu_patches.cpp) and
// the CUDA kernel (cuda/kernels/index.cu).
//
// An image (C, H, W) is cut into a row-major grid of patches of (ph, pw) with
// stride (sh, sw): rows = (H - ph) / sh + 1, cols = (W - pw) / sw + 1,
// patch p has its top-left corner at ((p / cols) sh, (p % cols) sw).
#pragma once
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {

struct PatchGrid {
  int64_t height = 0, width = 0;      ///< image (H, W)
  int64_t patch_h = 0, patch_w = 0;   ///< patch (ph, pw)
  int64_t stride_h = 0, stride_w = 0; ///< stride (sh, sw)

  IPSNET_HD int64_t rows() const { return (height - patch_h) / stride_h + 1; }
  IPSNET_HD int64_t cols() const { return (width - patch_w) / stride_w + 1; }
  IPSNET_HD int64_t count() const { return rows() * cols(); }
  /// Top-left corner of patch p.
  IPSNET_HD int64_t row0(int64_t p) const { return (p / cols()) * stride_h; }
  IPSNET_HD int64_t col0(int64_t p) const { return (p % cols()) * stride_w; }
  /// Elements of one patch of C channels.
  IPSNET_HD int64_t patch_numel(int64_t c) const { return c * patch_h * patch_w; }
  /// Offset within one image (C, H, W) of element (c, y, x) of patch p.
  IPSNET_HD int64_t source_offset(int64_t p, int64_t c, int64_t y, int64_t x) const {
    return (c * height + row0(p) + y) * width + col0(p) + x;
  }
};

}  // namespace ipsnet
