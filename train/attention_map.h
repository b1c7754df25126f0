// Attention maps (SPEC section 6): the per-patch selection scores drawn as a
// heat map over the image on the patch grid, selected patches outlined and
// unselected dimmed, plus a tile sheet of the selected patches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/math/patches.h"

namespace ipsnet {
namespace train {

struct AttentionMapInput {
  const float* image = nullptr;  // (H, W) in [0, 1]
  PatchGrid grid;
  std::vector<int64_t> selected;        // (M) patch indices
  std::vector<float> selected_scores;   // (M) final-iteration scores (may be empty)
  std::vector<float> all_scores;        // (N) full-pass scores (may be empty)
};

/// RGB (h, w, 3) rendering; max_side bounds the larger side (integer
/// downscale by max-pooling so strokes survive; 0 = full resolution).
std::vector<uint8_t> render_attention_map(const AttentionMapInput& in, int64_t max_side, int64_t* out_h,
                                          int64_t* out_w);
/// Gray tile sheet of the selected patches in selection order, each scaled by
/// an integer factor to at least 64 px, 4 px gaps.
std::vector<uint8_t> render_tile_sheet(const AttentionMapInput& in, int64_t* out_h, int64_t* out_w);

}  // namespace train
}  // namespace ipsnet
