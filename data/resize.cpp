// Image resizers for the dataset generators; every one clamps to [0, 1].
#include "data/resize.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace ipsnet {
namespace data {

void resize_area(const float* src, int64_t in_h, int64_t in_w, float* dst, int64_t out_h, int64_t out_w) {
  // Separable box-coverage weights per axis.
  auto weights = [](int64_t in, int64_t out) {
    std::vector<std::vector<std::pair<int64_t, double>>> w(out);
    double s = static_cast<double>(in) / out;
    for (int64_t o = 0; o < out; ++o) {
      double a = o * s, b = (o + 1) * s;
      for (int64_t i = static_cast<int64_t>(std::floor(a)); i < std::min<int64_t>(in, static_cast<int64_t>(std::ceil(b))); ++i) {
        double cover = std::min<double>(b, i + 1) - std::max<double>(a, i);
        if (cover > 1e-12) w[o].emplace_back(i, cover / s);
      }
    }
    return w;
  };
  auto wr = weights(in_h, out_h), wc = weights(in_w, out_w);
  std::vector<double> tmp(in_h * out_w, 0.0);
  for (int64_t r = 0; r < in_h; ++r)
    for (int64_t oc = 0; oc < out_w; ++oc) {
      double acc = 0;
      for (auto [i, wt] : wc[oc]) acc += wt * src[r * in_w + i];
      tmp[r * out_w + oc] = acc;
    }
  for (int64_t orow = 0; orow < out_h; ++orow)
    for (int64_t oc = 0; oc < out_w; ++oc) {
      double acc = 0;
      for (auto [i, wt] : wr[orow]) acc += wt * tmp[i * out_w + oc];
      dst[orow * out_w + oc] = static_cast<float>(std::clamp(acc, 0.0, 1.0));
    }
}

std::vector<float> rescale_antialias(const float* src, int64_t side, double scale, int64_t* out_side) {
  int64_t out = static_cast<int64_t>(std::nearbyint(side * scale));
  *out_side = out;
  if (out <= 0) return {};
  double f = static_cast<double>(side) / out;  // input pixels per output pixel
  double sigma = std::max(0.0, (f - 1.0) / 2.0);
  auto mirror = [side](int64_t i) {  // scipy 'mirror': d c b | a b c d | c b a
    if (side == 1) return int64_t{0};
    int64_t period = 2 * (side - 1);
    i = ((i % period) + period) % period;
    return i < side ? i : period - i;
  };
  std::vector<double> img(src, src + side * side);
  if (sigma > 0) {
    int64_t radius = static_cast<int64_t>(4.0 * sigma + 0.5);
    std::vector<double> k(2 * radius + 1);
    double sum = 0;
    for (int64_t i = -radius; i <= radius; ++i) sum += k[i + radius] = std::exp(-0.5 * i * i / (sigma * sigma));
    for (auto& v : k) v /= sum;
    std::vector<double> tmp(side * side);
    for (int64_t r = 0; r < side; ++r)
      for (int64_t c = 0; c < side; ++c) {
        double acc = 0;
        for (int64_t i = -radius; i <= radius; ++i) acc += k[i + radius] * img[r * side + mirror(c + i)];
        tmp[r * side + c] = acc;
      }
    for (int64_t r = 0; r < side; ++r)
      for (int64_t c = 0; c < side; ++c) {
        double acc = 0;
        for (int64_t i = -radius; i <= radius; ++i) acc += k[i + radius] * tmp[mirror(r + i) * side + c];
        img[r * side + c] = acc;
      }
  }
  std::vector<float> dst(out * out);
  for (int64_t orow = 0; orow < out; ++orow) {
    double y = (orow + 0.5) * f - 0.5;
    int64_t y0 = static_cast<int64_t>(std::floor(y));
    double fy = y - y0;
    for (int64_t oc = 0; oc < out; ++oc) {
      double x = (oc + 0.5) * f - 0.5;
      int64_t x0 = static_cast<int64_t>(std::floor(x));
      double fx = x - x0;
      double v = (1 - fy) * ((1 - fx) * img[mirror(y0) * side + mirror(x0)] + fx * img[mirror(y0) * side + mirror(x0 + 1)]) +
                 fy * ((1 - fx) * img[mirror(y0 + 1) * side + mirror(x0)] + fx * img[mirror(y0 + 1) * side + mirror(x0 + 1)]);
      // Drop float dust so the sparse view stays sparse; clip like skimage.
      v = std::clamp(v, 0.0, 1.0);
      dst[orow * out + oc] = v < 1e-6 ? 0.0f : static_cast<float>(v);
    }
  }
  return dst;
}

void resize_bilinear(const float* src, int64_t in_h, int64_t in_w, float* dst, int64_t out_h, int64_t out_w) {
  // Per axis: source index pair and weight of the second, from the
  // half-pixel mapping x = (o + 0.5) * in / out - 0.5, clamped at the edges.
  struct Tap {
    int64_t i0, i1;
    double f;
  };
  auto taps = [](int64_t in, int64_t out) {
    std::vector<Tap> t(out);
    double s = static_cast<double>(in) / out;
    for (int64_t o = 0; o < out; ++o) {
      double x = std::max((o + 0.5) * s - 0.5, 0.0);
      int64_t i0 = std::min<int64_t>(static_cast<int64_t>(x), in - 1);
      int64_t i1 = std::min<int64_t>(i0 + 1, in - 1);
      t[o] = {i0, i1, i1 == i0 ? 0.0 : x - i0};
    }
    return t;
  };
  auto tr = taps(in_h, out_h), tc = taps(in_w, out_w);
  for (int64_t orow = 0; orow < out_h; ++orow) {
    const Tap& a = tr[orow];
    const float* r0 = src + a.i0 * in_w;
    const float* r1 = src + a.i1 * in_w;
    float* out = dst + orow * out_w;
    for (int64_t oc = 0; oc < out_w; ++oc) {
      const Tap& b = tc[oc];
      double top = (1 - b.f) * r0[b.i0] + b.f * r0[b.i1];
      double bot = (1 - b.f) * r1[b.i0] + b.f * r1[b.i1];
      out[oc] = static_cast<float>(std::clamp((1 - a.f) * top + a.f * bot, 0.0, 1.0));
    }
  }
}

}  // namespace data
}  // namespace ipsnet
