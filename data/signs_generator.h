// `ipsnet generate-data --style signs`: synthetic street-like colour scenes
// in the Swedish Traffic Signs layout (OUT/Set1, OUT/Set2: JPEGs and
// annotations.txt in the real syntax), so that import-traffic-signs, training,
// evaluation and attention maps run without a download.
//
// A scene (H x W, default 960 x 1280 as the STS camera): a sky gradient over
// a textured road and verge, houses, trees, per-pixel noise. Its class is
// uniform over EMPTY, 50, 70, 80. A speed-limit sign is a white disk with a
// red ring showing two MNIST digits (5|7|8 then 0; Set1 uses MNIST training
// digits, Set2 test digits), radius 14..30 px, annotated VISIBLE. Every scene
// may also hold distractors: red-ringed disks with 30/60/90 (annotated as
// 30_SIGN etc., which the task ignores), blue squares and red-bordered
// triangles (annotated as other signs), red balls (not annotated); some
// scenes carry MISC_SIGNS entries, some a second, BLURRED or OCCLUDED speed
// sign, and about 5 % only an OCCLUDED speed sign (dropped by the task's
// rules). Coordinates carry a trailing junk character now and then, as in
// the real files.
#pragma once
#include <cstdint>
#include <string>

#include "data/mnist.h"

namespace ipsnet {
namespace data {

struct SignsOptions {
  int64_t n_set1 = 400, n_set2 = 200;
  int64_t height = 960, width = 1280;
  int64_t seed = 0;
  int jpeg_quality = 90;
  int threads = 0;
  bool force = false;
};

struct SignsStats {
  int64_t images = 0, bytes = 0;
  int64_t per_class[4] = {0, 0, 0, 0};  // EMPTY, 50, 70, 80 (as generated; dropped ones not counted)
  int64_t dropped = 0;
};

/// Writes OUT/Set1 and OUT/Set2 (built in a TempDirectory).
SignsStats generate_signs(const SignsOptions& o, const DigitSource& digits, const std::string& out);

}  // namespace data
}  // namespace ipsnet
