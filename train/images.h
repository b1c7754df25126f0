// Whole images and views of a batch for the methods that do not work on the
// patch grid (the full-image CNN, attention sampling): general helpers over
// a DataSource, read one image at a time so that host memory holds one
// full-resolution image plus the result.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "data/source.h"
#include "engine/engine.h"

namespace ipsnet {
namespace train {

/// The size of an (H, W) image downscaled by `scale` as the attention-sampling
/// original computes it: (int(scale*H), int(scale*W)); scale 1 keeps it.
std::pair<int64_t, int64_t> scaled_size(int64_t H, int64_t W, double scale);

/// (B, C, h, w) on `device`: the whole images `ids`, each downscaled by
/// `scale` with area interpolation (every output pixel averages the input
/// area it covers; no clamping: normalised photographs keep their values);
/// scale 1: full size. All images must have the size of the first.
Tensor read_images(const data::DataSource& source, const std::vector<int64_t>& ids, double scale, Device device);

/// (B, C, h, w) on `device`: the low-resolution views of `ids`: the stored
/// view when scale == 0 (the source must have one), else the image
/// downscaled by `scale` (read_images).
Tensor read_lowres_views(const data::DataSource& source, const std::vector<int64_t>& ids, double scale,
                         Device device);

/// (B*n, C, p, p) on `device`: square patches of side p of the images `ids`
/// at top-left corners `corners` (B*n (row, col) pairs, n per image, any
/// integers: pixels outside the image read as 0).
Tensor read_patches_at(const data::DataSource& source, const std::vector<int64_t>& ids,
                       const std::vector<std::pair<int64_t, int64_t>>& corners, int64_t p, Device device);

}  // namespace train
}  // namespace ipsnet
