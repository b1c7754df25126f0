// Attention maps (SPEC section 6): the per-patch selection scores drawn as a
// heat map over the image on the patch grid, selected patches outlined and
// unselected dimmed, plus a tile sheet of the selected patches. Grayscale
// images and colour photographs alike: the image is (C, H, W) in [0, 1].
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/math/patches.h"

namespace ipsnet {
namespace train {

struct AttentionMapInput {
  const float* image = nullptr;  // (C, H, W) in [0, 1]
  int64_t channels = 1;          // C: 1 (gray) or 3 (RGB)
  PatchGrid grid;
  std::vector<int64_t> selected;        // (M) patch indices
  std::vector<float> selected_scores;   // (M) final-iteration scores (may be empty)
  std::vector<float> all_scores;        // (N) full-pass scores (may be empty)
};

/// RGB (h, w, 3) rendering; max_side bounds the larger side (integer
/// downscale by max-pooling so strokes survive; 0 = full resolution).
std::vector<uint8_t> render_attention_map(const AttentionMapInput& in, int64_t max_side, int64_t* out_h,
                                          int64_t* out_w);
/// Tile sheet (h, w, C) of the selected patches in selection order, each
/// scaled by an integer factor to at least 64 px, 4 px gaps; C = in.channels.
std::vector<uint8_t> render_tile_sheet(const AttentionMapInput& in, int64_t* out_h, int64_t* out_w);

/// The heat-map colour of t in [0, 1] (a dark-blue -> red -> yellow ramp,
/// like "inferno"): rgb[3] in [0, 1].
void heat_color(float t, float* rgb);

/// Undoes a per-channel normalisation for display: image (C, H, W) holding
/// (x - mean[c]) / std[c] becomes x, clamped to [0, 1]. `normalize` is the
/// config's key: "none" (only the clamp) or "imagenet".
void denormalize_for_display(float* image, int64_t channels, int64_t plane, const std::string& normalize);

}  // namespace train
}  // namespace ipsnet
