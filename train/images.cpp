#include "train/images.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace ipsnet {
namespace train {

std::pair<int64_t, int64_t> scaled_size(int64_t H, int64_t W, double scale) {
  if (scale == 1.0) return {H, W};
  return {static_cast<int64_t>(scale * static_cast<double>(H)), static_cast<int64_t>(scale * static_cast<double>(W))};
}

namespace {
// Area interpolation of one (in_h, in_w) plane to (out_h, out_w): every
// output pixel is the mean of the input area it covers (separable box
// weights). Values are not clamped: normalised photographs are negative too.
void area_resize(const float* src, int64_t in_h, int64_t in_w, float* dst, int64_t out_h, int64_t out_w) {
  auto weights = [](int64_t in, int64_t out) {
    std::vector<std::vector<std::pair<int64_t, double>>> w(static_cast<size_t>(out));
    const double s = static_cast<double>(in) / static_cast<double>(out);
    for (int64_t o = 0; o < out; ++o) {
      const double a = static_cast<double>(o) * s, b = static_cast<double>(o + 1) * s;
      const int64_t end = std::min<int64_t>(in, static_cast<int64_t>(std::ceil(b)));
      for (int64_t i = static_cast<int64_t>(std::floor(a)); i < end; ++i) {
        const double cover = std::min<double>(b, static_cast<double>(i + 1)) - std::max<double>(a, static_cast<double>(i));
        if (cover > 1e-12) w[static_cast<size_t>(o)].emplace_back(i, cover / s);
      }
    }
    return w;
  };
  const auto wr = weights(in_h, out_h), wc = weights(in_w, out_w);
  std::vector<double> tmp(static_cast<size_t>(in_h * out_w));
  for (int64_t r = 0; r < in_h; ++r)
    for (int64_t oc = 0; oc < out_w; ++oc) {
      double acc = 0;
      for (const auto& [i, wt] : wc[static_cast<size_t>(oc)]) acc += wt * src[r * in_w + i];
      tmp[static_cast<size_t>(r * out_w + oc)] = acc;
    }
  for (int64_t orow = 0; orow < out_h; ++orow)
    for (int64_t oc = 0; oc < out_w; ++oc) {
      double acc = 0;
      for (const auto& [i, wt] : wr[static_cast<size_t>(orow)]) acc += wt * tmp[static_cast<size_t>(i * out_w + oc)];
      dst[orow * out_w + oc] = static_cast<float>(acc);
    }
}

void check_pixels(const data::DataSource& source, const char* what) {
  IPSNET_CHECK(source.has_pixels(), what, ": the ", source.kind(), " data source has no pixels (feature bags)");
}
}  // namespace

Tensor read_images(const data::DataSource& source, const std::vector<int64_t>& ids, double scale, Device device) {
  check_pixels(source, "whole images");
  IPSNET_CHECK(!ids.empty(), "whole images: no image ids");
  IPSNET_CHECK(scale > 0 && scale <= 1, "whole images: scale ", scale, " must be in (0, 1]");
  const PatchGrid g = source.grid(ids[0]);
  const int64_t C = source.channels(), H = g.height, W = g.width, B = static_cast<int64_t>(ids.size());
  const auto [h, w] = scaled_size(H, W, scale);
  IPSNET_CHECK(h >= 1 && w >= 1, "whole images: a ", H, "x", W, " image scaled by ", scale, " has no pixels left");
  Tensor out = Tensor::empty({B, C, h, w});
  std::vector<float> full(h == H && w == W ? 0 : static_cast<size_t>(C * H * W));
  for (int64_t b = 0; b < B; ++b) {
    const PatchGrid gb = source.grid(ids[static_cast<size_t>(b)]);
    IPSNET_CHECK(gb.height == H && gb.width == W, "whole images: image ", ids[static_cast<size_t>(b)], " is ",
                 gb.height, "x", gb.width, " and image ", ids[0], " is ", H, "x", W,
                 ": a batch of whole images needs one size");
    float* dst = out.data<float>() + b * C * h * w;
    if (full.empty()) {
      source.read_image(ids[static_cast<size_t>(b)], dst);
      continue;
    }
    source.read_image(ids[static_cast<size_t>(b)], full.data());
    for (int64_t c = 0; c < C; ++c) area_resize(full.data() + c * H * W, H, W, dst + c * h * w, h, w);
  }
  return device.is_cpu() ? out : out.to(device);
}

Tensor read_lowres_views(const data::DataSource& source, const std::vector<int64_t>& ids, double scale,
                         Device device) {
  if (scale > 0) return read_images(source, ids, scale, device);
  check_pixels(source, "low-resolution views");
  IPSNET_CHECK(source.has_lowres(), "low-resolution views: the ", source.kind(),
               " dataset stores none (make one with `ipsnet generate-data --style ats`, or set the config key "
               "'scale' to downscale the images on the fly)");
  IPSNET_CHECK(!ids.empty(), "low-resolution views: no image ids");
  const int64_t C = source.channels(), B = static_cast<int64_t>(ids.size());
  const auto [h, w] = source.lowres_size(ids[0]);
  Tensor out = Tensor::empty({B, C, h, w});
  for (int64_t b = 0; b < B; ++b) {
    IPSNET_CHECK(source.lowres_size(ids[static_cast<size_t>(b)]) == std::make_pair(h, w),
                 "low-resolution views: image ", ids[static_cast<size_t>(b)], " differs in size from image ", ids[0]);
    source.read_lowres(ids[static_cast<size_t>(b)], out.data<float>() + b * C * h * w);
  }
  return device.is_cpu() ? out : out.to(device);
}

Tensor read_patches_at(const data::DataSource& source, const std::vector<int64_t>& ids,
                       const std::vector<std::pair<int64_t, int64_t>>& corners, int64_t p, Device device) {
  check_pixels(source, "patches at positions");
  const int64_t B = static_cast<int64_t>(ids.size());
  IPSNET_CHECK(B >= 1 && static_cast<int64_t>(corners.size()) % B == 0, "patches at positions: ", corners.size(),
               " corners for ", B, " images");
  const int64_t n = static_cast<int64_t>(corners.size()) / B, C = source.channels();
  Tensor out = Tensor::zeros({B * n, C, p, p});
  float* o = out.data<float>();
  std::vector<float> img;
  for (int64_t b = 0; b < B; ++b) {
    const PatchGrid g = source.grid(ids[static_cast<size_t>(b)]);
    const int64_t H = g.height, W = g.width;
    img.resize(static_cast<size_t>(C * H * W));
    source.read_image(ids[static_cast<size_t>(b)], img.data());
    for (int64_t k = 0; k < n; ++k) {
      const auto [r0, c0] = corners[static_cast<size_t>(b * n + k)];
      float* dst = o + (b * n + k) * C * p * p;
      // The part of the patch inside the image; the rest stays 0.
      const int64_t y0 = std::max<int64_t>(0, -r0), y1 = std::min<int64_t>(p, H - r0);
      const int64_t x0 = std::max<int64_t>(0, -c0), x1 = std::min<int64_t>(p, W - c0);
      if (y0 >= y1 || x0 >= x1) continue;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = y0; y < y1; ++y)
          std::memcpy(dst + (c * p + y) * p + x0, img.data() + (c * H + r0 + y) * W + c0 + x0,
                      static_cast<size_t>(x1 - x0) * sizeof(float));
    }
  }
  return device.is_cpu() ? out : out.to(device);
}

}  // namespace train
}  // namespace ipsnet
