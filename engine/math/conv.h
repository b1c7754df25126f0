// Convolution and pooling bodies shared by the CPU reference loops and CUDA
// kernels. One (n, c) plane per call, row-major (H, W); no allocation.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/common/hostdevice.h"

namespace ipsnet {
namespace math {

// im2col, one row of the column matrix: for kernel tap (ki, kj) of one input
// plane x (H, W), col[oh * wo + ow] = x[oh*sh - ph + ki*dh, ow*sw - pw + kj*dw]
// (0 outside the plane). The column matrix of an image is (C*kh*kw, ho*wo),
// row index (c*kh + ki)*kw + kj, so y (O, ho*wo) = W (O, C*kh*kw) @ col.
template <typename T>
IPSNET_HD void im2col_row(const T* x, T* col, int64_t h, int64_t w, int64_t ki, int64_t kj,
                          int64_t ho, int64_t wo, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                          int64_t dh, int64_t dw) {
  for (int64_t oh = 0; oh < ho; ++oh) {
    const int64_t ih = oh * sh - ph + ki * dh;
    T* out = col + oh * wo;
    if (ih < 0 || ih >= h) {
      for (int64_t ow = 0; ow < wo; ++ow) out[ow] = T(0);
      continue;
    }
    const T* row = x + ih * w;
    for (int64_t ow = 0; ow < wo; ++ow) {
      const int64_t iw = ow * sw - pw + kj * dw;
      out[ow] = (iw >= 0 && iw < w) ? row[iw] : T(0);
    }
  }
}

// col2im, one row: the adjoint of im2col_row. dx[ih, iw] += col[oh * wo + ow]
// for every in-plane position the row read from (accumulates: the caller zeroes
// dx once and adds every (c, ki, kj) row of the plane).
template <typename T>
IPSNET_HD void col2im_row_add(const T* col, T* dx, int64_t h, int64_t w, int64_t ki, int64_t kj,
                              int64_t ho, int64_t wo, int64_t sh, int64_t sw, int64_t ph,
                              int64_t pw, int64_t dh, int64_t dw) {
  for (int64_t oh = 0; oh < ho; ++oh) {
    const int64_t ih = oh * sh - ph + ki * dh;
    if (ih < 0 || ih >= h) continue;
    const T* in = col + oh * wo;
    T* row = dx + ih * w;
    for (int64_t ow = 0; ow < wo; ++ow) {
      const int64_t iw = ow * sw - pw + kj * dw;
      if (iw >= 0 && iw < w) row[iw] += in[ow];
    }
  }
}

// Max over one pooling window of plane x (H, W) at output (oh, ow); padding
// is -inf, so only in-plane positions compete. Returns the max and writes its
// flat index ih * W + iw: the first maximum in row-major window order; a NaN
// wins (the last NaN, as PyTorch's CPU kernel). The window must hold an
// in-plane position (the ops ensure it: padding <= kernel / 2).
// The common pass compares with a plain `>` and only notes NaNs; a NaN-aware
// comparison in the select chain costs ~5x on the CPU, so it runs only for
// windows that hold a NaN.
template <typename T>
IPSNET_HD T max_pool_window(const T* x, int64_t h, int64_t w, int64_t oh, int64_t ow,
                            int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                            int64_t pw, int64_t* argmax) {
  const int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
  const int64_t hs = h0 < 0 ? 0 : h0, ws = w0 < 0 ? 0 : w0;
  const int64_t he = h0 + kh > h ? h : h0 + kh, we = w0 + kw > w ? w : w0 + kw;
  int64_t idx = hs * w + ws;
  T best = x[idx];
  bool nan = false;
  for (int64_t i = hs; i < he; ++i)
    for (int64_t j = ws; j < we; ++j) {
      const T v = x[i * w + j];
      const bool take = v > best;
      best = take ? v : best;
      idx = take ? i * w + j : idx;
      nan |= v != v;
    }
  if (nan) {
    for (int64_t i = hs; i < he; ++i)
      for (int64_t j = ws; j < we; ++j) {
        const T v = x[i * w + j];
        if (v != v) {
          best = v;
          idx = i * w + j;
        }
      }
  }
  *argmax = idx;
  return best;
}

}  // namespace math
}  // namespace ipsnet
