#include "train/attention_map.h"

#include <algorithm>
#include <cmath>

#include "data/photo_source.h"
#include "engine/common/error.h"

namespace ipsnet {
namespace train {

// A perceptually ordered dark-blue -> red -> yellow ramp (like "inferno").
void heat_color(float t, float* rgb) {
  t = std::min(1.0f, std::max(0.0f, t));
  const float stops[5][3] = {{0.0f, 0.0f, 0.2f}, {0.35f, 0.05f, 0.55f}, {0.8f, 0.15f, 0.3f}, {1.0f, 0.55f, 0.05f},
                             {1.0f, 1.0f, 0.4f}};
  float x = t * 4.0f;
  int i = std::min(3, static_cast<int>(x));
  float f = x - static_cast<float>(i);
  for (int c = 0; c < 3; ++c) rgb[c] = stops[i][c] * (1 - f) + stops[i + 1][c] * f;
}

std::vector<uint8_t> render_attention_map(const AttentionMapInput& in, int64_t max_side, int64_t* out_h,
                                          int64_t* out_w) {
  const PatchGrid& g = in.grid;
  const int64_t H = g.height, W = g.width, N = g.count(), C = in.channels;
  IPSNET_CHECK(C == 1 || C == 3, "attention map: images of ", C, " channels (expected 1 or 3)");
  IPSNET_CHECK(in.selected_scores.empty() || in.selected_scores.size() == in.selected.size(),
               "attention map: ", in.selected.size(), " selected patches but ", in.selected_scores.size(), " scores");
  IPSNET_CHECK(in.all_scores.empty() || static_cast<int64_t>(in.all_scores.size()) == N, "attention map: ",
               in.all_scores.size(), " scores for a grid of ", N, " patches");
  // Per-pixel score (max over covering patches) and selection mask.
  std::vector<float> score(static_cast<size_t>(H * W), -1.0f);
  std::vector<uint8_t> sel(static_cast<size_t>(H * W), 0);
  auto paint = [&](int64_t p, float s, bool selected) {
    for (int64_t r = g.row0(p); r < g.row0(p) + g.patch_h; ++r)
      for (int64_t c = g.col0(p); c < g.col0(p) + g.patch_w; ++c) {
        size_t k = static_cast<size_t>(r * W + c);
        score[k] = std::max(score[k], s);
        if (selected) sel[k] = 1;
      }
  };
  float lo = 1e30f, hi = -1e30f;
  auto range = [&](const std::vector<float>& v) {
    for (float s : v) {
      lo = std::min(lo, s);
      hi = std::max(hi, s);
    }
  };
  if (!in.all_scores.empty()) range(in.all_scores);
  else range(in.selected_scores);
  auto norm = [&](float s) { return hi > lo ? (s - lo) / (hi - lo) : 1.0f; };
  if (!in.all_scores.empty())
    for (int64_t p = 0; p < N; ++p) paint(p, norm(in.all_scores[static_cast<size_t>(p)]), false);
  for (size_t j = 0; j < in.selected.size(); ++j)
    paint(in.selected[j], in.selected_scores.empty() ? 1.0f : norm(in.selected_scores[j]), true);
  // Full-resolution RGB.
  std::vector<float> rgb(static_cast<size_t>(H * W * 3));
  for (int64_t k = 0; k < H * W; ++k) {
    float out[3];
    for (int c = 0; c < 3; ++c) out[c] = in.image[(C == 3 ? c : 0) * H * W + k];
    if (score[static_cast<size_t>(k)] >= 0) {
      float hc[3];
      heat_color(score[static_cast<size_t>(k)], hc);
      for (int c = 0; c < 3; ++c) out[c] = 0.55f * out[c] + 0.45f * hc[c];
    }
    if (!sel[static_cast<size_t>(k)])
      for (int c = 0; c < 3; ++c) out[c] *= 0.35f;
    for (int c = 0; c < 3; ++c) rgb[static_cast<size_t>(k * 3 + c)] = out[c];
  }
  // Outline the selected patches (2 px, yellow-green).
  const int64_t t = std::max<int64_t>(1, std::min<int64_t>(2, std::min(g.patch_h, g.patch_w) / 16));
  for (int64_t p : in.selected) {
    int64_t r0 = g.row0(p), c0 = g.col0(p), r1 = r0 + g.patch_h - 1, c1 = c0 + g.patch_w - 1;
    for (int64_t r = r0; r <= r1; ++r)
      for (int64_t c = c0; c <= c1; ++c) {
        bool edge = r - r0 < t || r1 - r < t || c - c0 < t || c1 - c < t;
        if (!edge) continue;
        float* px = &rgb[static_cast<size_t>((r * W + c) * 3)];
        px[0] = 0.6f;
        px[1] = 1.0f;
        px[2] = 0.2f;
      }
  }
  // Integer downscale by max-pooling.
  int64_t f = 1;
  if (max_side > 0)
    while (std::max(H, W) / f > max_side) ++f;
  const int64_t oh = H / f, ow = W / f;
  std::vector<uint8_t> out(static_cast<size_t>(oh * ow * 3));
  for (int64_t r = 0; r < oh; ++r)
    for (int64_t c = 0; c < ow; ++c)
      for (int ch = 0; ch < 3; ++ch) {
        float m = 0;
        for (int64_t dr = 0; dr < f; ++dr)
          for (int64_t dc = 0; dc < f; ++dc)
            m = std::max(m, rgb[static_cast<size_t>(((r * f + dr) * W + c * f + dc) * 3 + ch)]);
        out[static_cast<size_t>((r * ow + c) * 3 + ch)] = static_cast<uint8_t>(std::lround(std::min(1.0f, m) * 255));
      }
  *out_h = oh;
  *out_w = ow;
  return out;
}

std::vector<uint8_t> render_tile_sheet(const AttentionMapInput& in, int64_t* out_h, int64_t* out_w) {
  const PatchGrid& g = in.grid;
  const int64_t M = static_cast<int64_t>(in.selected.size());
  IPSNET_CHECK(M > 0, "tile sheet: no selected patches");
  const int64_t side = std::max(g.patch_h, g.patch_w);
  const int64_t scale = std::max<int64_t>(1, (64 + side - 1) / side), sh = g.patch_h * scale, sw = g.patch_w * scale;
  const int64_t gap = 4;
  const int64_t cols = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(M))));
  const int64_t rows = (M + cols - 1) / cols;
  const int64_t h = rows * sh + (rows + 1) * gap, w = cols * sw + (cols + 1) * gap;
  const int64_t C = in.channels, plane = g.height * g.width;
  IPSNET_CHECK(C == 1 || C == 3, "tile sheet: images of ", C, " channels (expected 1 or 3)");
  std::vector<uint8_t> out(static_cast<size_t>(h * w * C), 40);
  for (int64_t j = 0; j < M; ++j) {
    int64_t p = in.selected[static_cast<size_t>(j)];
    int64_t y0 = gap + (j / cols) * (sh + gap), x0 = gap + (j % cols) * (sw + gap);
    for (int64_t r = 0; r < sh; ++r)
      for (int64_t c = 0; c < sw; ++c)
        for (int64_t ch = 0; ch < C; ++ch) {
          float v = in.image[ch * plane + (g.row0(p) + r / scale) * g.width + g.col0(p) + c / scale];
          v = std::min(1.0f, std::max(0.0f, v));
          out[static_cast<size_t>(((y0 + r) * w + x0 + c) * C + ch)] = static_cast<uint8_t>(std::lround(v * 255));
        }
  }
  *out_h = h;
  *out_w = w;
  return out;
}

void denormalize_for_display(float* image, int64_t channels, int64_t plane, const std::string& normalize) {
  float mean[3] = {0, 0, 0}, stdv[3] = {1, 1, 1};
  if (normalize == "imagenet") {
    IPSNET_CHECK(channels == 3, "normalize: imagenet needs 3 channels, the image has ", channels);
    for (int c = 0; c < 3; ++c) {
      mean[c] = data::kImagenetMean[c];
      stdv[c] = data::kImagenetStd[c];
    }
  } else {
    IPSNET_CHECK(normalize == "none" || normalize.empty(), "normalize: '", normalize,
                 "' is not known (none | imagenet)");
  }
  for (int64_t c = 0; c < channels; ++c) {
    const float m = mean[c < 3 ? c : 0], sd = stdv[c < 3 ? c : 0];
    float* p = image + c * plane;
    for (int64_t k = 0; k < plane; ++k) p[k] = std::min(1.0f, std::max(0.0f, p[k] * sd + m));
  }
}

}  // namespace train
}  // namespace ipsnet
