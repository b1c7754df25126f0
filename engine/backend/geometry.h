// Geometry descriptors for the convolution, batch-norm and pooling primitives.
// Plain structs of sizes (int64), shared by the CPU backend (oneDNN and the
// reference loops) and the CUDA backend (cuDNN), so both implement one
// signature. The ops fill them after checking shapes.
#pragma once
#include <cstdint>
#include <string>

#include "engine/common/error.h"
#include "engine/math/patches.h"

namespace ipsnet {

/// 2-D convolution, NCHW input, OIHW weight, NCHW output. PyTorch semantics:
/// symmetric zero padding, dilation 1 = dense kernel,
/// ho = (h + 2 ph - dh (kh - 1) - 1) / sh + 1 (floor), likewise wo.
struct Conv2dGeometry {
  int64_t n = 0, c = 0, h = 0, w = 0;  ///< input (N, C, H, W)
  int64_t o = 0, kh = 0, kw = 0;       ///< weight (O, C, kh, kw)
  int64_t sh = 1, sw = 1;              ///< stride
  int64_t ph = 0, pw = 0;              ///< padding (each side)
  int64_t dh = 1, dw = 1;              ///< dilation
  int64_t ho = 0, wo = 0;              ///< output spatial size
  /// bfloat16 inputs and weights (and output gradients in backward), float32
  /// accumulation and outputs: set by ops::conv2d under ConvBf16Guard
  /// (inference) or PrecisionGuard (training) when the backend supports it.
  bool bf16 = false;
  /// Multiply-adds of the forward pass (each backward pass costs the same).
  double macs() const { return double(n) * o * ho * wo * c * kh * kw; }
  /// "x (N, C, H, W) w (O, C, kh, kw) s (sh, sw) p (ph, pw) d (dh, dw) -> (ho, wo)"
  std::string str() const {
    return str_cat("x (", n, ", ", c, ", ", h, ", ", w, ") w (", o, ", ", c, ", ", kh, ", ", kw,
                   ") s (", sh, ", ", sw, ") p (", ph, ", ", pw, ") d (", dh, ", ", dw, ") -> (", ho,
                   ", ", wo, ")");
  }
};

/// Batch norm over x viewed as (N, C, S) with S = H * W (1 for (N, C) input):
/// statistics per channel over N * S elements.
struct BatchNormGeometry {
  int64_t n = 0, c = 0, s = 1;
  int64_t count() const { return n * s; }
};

/// 2-D pooling window, NCHW -> (N, C, ho, wo). Padding counts as -inf for max.
struct Pool2dGeometry {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  int64_t ho = 0, wo = 0;
  std::string str() const {
    return str_cat("x (", n, ", ", c, ", ", h, ", ", w, ") k (", kh, ", ", kw, ") s (", sh, ", ",
                   sw, ") p (", ph, ", ", pw, ") -> (", ho, ", ", wo, ")");
  }
};

/// PyTorch's output size: (in + 2 pad - dil (k - 1) - 1) / stride + 1, floor
/// division; may be <= 0 (the ops reject that).
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  if (span < 0) return 0;
  return span / stride + 1;
}

/// The patch grid of an H x W image in patches of (ph, pw) with stride
/// (sh, sw); throws naming the sizes when a patch does not fit.
inline PatchGrid make_patch_grid(int64_t height, int64_t width, int64_t ph, int64_t pw, int64_t sh, int64_t sw) {
  IPSNET_CHECK(ph >= 1 && pw >= 1 && sh >= 1 && sw >= 1, "patch (", ph, ", ", pw, ") and stride (", sh, ", ", sw,
               ") must be >= 1");
  IPSNET_CHECK(ph <= height && pw <= width, "patch (", ph, ", ", pw, ") does not fit the ", height, "x", width,
               " image");
  PatchGrid g;
  g.height = height;
  g.width = width;
  g.patch_h = ph;
  g.patch_w = pw;
  g.stride_h = sh;
  g.stride_w = sw;
  return g;
}
/// Square patches of `size` with stride `stride`.
inline PatchGrid make_patch_grid(int64_t height, int64_t width, int64_t size, int64_t stride) {
  return make_patch_grid(height, width, size, size, stride, stride);
}

}  // namespace ipsnet
