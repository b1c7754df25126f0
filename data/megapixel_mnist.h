// Megapixel MNIST generators (SPEC section 5): `ats` (attention-sampling,
// with a low-resolution view), `ips` (noise under the digits, four task
// labels) and `pineneedle` (Bezier noise, digit size for a chosen
// object-to-image ratio, stroke thickness); plus `mnist`, the IPS example
// notebook's setting: one MNIST digit per image, resized (bilinear) to the
// whole canvas (default 500x500).
//
// Determinism: every image draws from its own Philox stream,
// Generator(split_seed, image_index); the noise bank of a split draws from
// Generator(split_seed, kBankStream). split_seed = seed + 1 for train and
// seed for test. Output is therefore byte-identical whatever the thread count.
// `mnist` takes image i's digit from a permutation of the split's digits
// drawn from Generator(split_seed, kBankStream) (before the noise bank).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/mnist.h"
#include "engine/random/generator.h"

namespace ipsnet {
namespace data {

/// The generator's parameters; defaults depend on the style (default_options).
struct MegapixelOptions {
  std::string style = "ips";  // "ats" | "ips" | "pineneedle" | "mnist"
  int64_t n_train = 5000, n_test = 1000;
  int64_t width = 1500, height = 1500;
  double scale = 0.12;  // low-res view scale (ats only)
  bool noise = true;
  uint64_t seed = 0;
  int64_t n_noise = 50;     // noise placements per image (pineneedle: also the bank size)
  int64_t digit_size = 28;  // digit box side (pineneedle resizes digits to it)
  int64_t noise_size = 28;  // noise pattern side (pineneedle; ats/ips use 28)
  int64_t thickness = 1;    // Bezier stroke width in px on the 28x28 grid (pineneedle)
  int threads = 0;          // 0: std::thread::hardware_concurrency()
};

constexpr int kDigitsPerImage = 5;
constexpr int64_t kAtsBankSize = 50;
constexpr uint64_t kBankStream = 1ull << 40;

/// Style defaults: ats/ips 1500x1500, 50 noise placements, digit 28;
/// pineneedle 3000x3000, digit 28, noise_size = digit_size, 800 placements
/// (the dissertation's pairing for 28 px digits), thickness 1; mnist
/// 500x500, n_train 10000 (the notebook's subset; generate-data caps it to
/// the train digits available), n_test 1000, no noise (n_noise 0).
MegapixelOptions default_options(const std::string& style);

/// Throws one clear line for any impossible combination (canvas too small
/// for five non-overlapping digits, digit larger than the canvas, ...).
void validate_options(const MegapixelOptions& o);

/// Side x side patterns stored contiguously.
struct NoiseBank {
  int64_t side = 0;
  std::vector<float> patterns;  // (count, side, side)
  int64_t count() const { return side ? static_cast<int64_t>(patterns.size()) / (side * side) : 0; }
  const float* pattern(int64_t k) const { return patterns.data() + k * side * side; }
};

/// The attention-sampling line noise: 50 28x28 patterns (SPEC 5, `ats`).
NoiseBank make_line_noise_bank(Generator& g);
/// n Bezier patterns drawn on 28x28 with the given stroke thickness, then
/// resized (area) to side x side.
NoiseBank make_bezier_noise_bank(Generator& g, int64_t n, int64_t thickness, int64_t side);

/// Rasterises the polyline through pts (x, y pairs, already rounded to
/// pixel centres) with value 1.0 into a (h, w) buffer: a pixel is set when
/// its centre lies closer than thickness/2 to a segment (segments shifted by
/// half a pixel for even thickness so the stroke is exactly `thickness` wide).
void draw_polyline(const std::vector<std::pair<double, double>>& pts, int64_t thickness, float* dst, int64_t h,
                   int64_t w);
/// Evaluates a Bezier curve with the given control points at n_t uniformly
/// spaced t in [0, 1] (de Casteljau) and rounds to integer pixels.
std::vector<std::pair<double, double>> bezier_points(const std::vector<std::pair<double, double>>& ctrl, int n_t);

/// The four IPS labels from the digit boxes: majority = the label found
/// three times, max = largest label, top = label of the smallest row (ties:
/// smallest column), multi = classes present.
void compute_labels(ImageMeta& meta);

/// One generated image.
struct GeneratedImage {
  SparseImage high;
  SparseImage low;  // empty unless style == "ats"
  ImageMeta meta;
};

/// Generates the images of one split. Thread-safe: generate() may run
/// concurrently with per-thread workspaces.
class SplitGenerator {
 public:
  SplitGenerator(const MegapixelOptions& o, const DigitSet& digits, bool train);
  ~SplitGenerator();
  SplitGenerator(const SplitGenerator&) = delete;
  SplitGenerator& operator=(const SplitGenerator&) = delete;

  int64_t size() const { return n_; }
  uint64_t split_seed() const { return split_seed_; }
  bool has_lowres() const { return lowres_h_ > 0; }
  int64_t lowres_height() const { return lowres_h_; }
  int64_t lowres_width() const { return lowres_w_; }

  /// Per-thread scratch: a reusable dense canvas (kept all-zero between
  /// images) and buffers for the sparse extraction.
  struct Workspace {
    std::vector<float> canvas, low_canvas;  // (H, W), (lowres_h, lowres_w)
    std::vector<float> digit_buf;           // (5, d, d)
    std::vector<int32_t> row_count, row_first;
    std::vector<std::pair<int32_t, int32_t>> intervals;
  };
  std::unique_ptr<Workspace> make_workspace() const;
  GeneratedImage generate(int64_t index, Workspace& ws) const;

 private:
  GeneratedImage generate_mnist(int64_t index, Workspace& ws) const;
  MegapixelOptions o_;
  const DigitSet& digits_;
  int64_t n_;
  uint64_t split_seed_;
  NoiseBank bank_;
  std::vector<int64_t> order_;                // mnist: image i shows digit order_[i]
  std::vector<std::vector<float>> bank_low_;  // ats: each pattern rescaled
  int64_t bank_low_side_ = 0;
  int64_t lowres_h_ = 0, lowres_w_ = 0;
};

/// Progress callback: (split, done, total).
using ProgressFn = std::function<void(const std::string&, int64_t, int64_t)>;

/// Statistics of one generate_dataset run.
struct GenerateStats {
  int64_t images = 0;
  int64_t bytes = 0;  // data + index files
  double seconds = 0;
};

/// Generates train and test splits into out_dir (via out_dir.tmp-XXXXXX and a
/// rename; an existing out_dir is refused unless force), writes
/// parameters.json. Workers generate in parallel; a bounded reorder buffer
/// writes images in order, so memory does not grow with n_train.
/// before_commit(tmp_dir) runs after both splits are written and before the
/// rename (used for previews), so its failure also leaves nothing behind.
GenerateStats generate_dataset(const MegapixelOptions& o, const DigitSource& src, const std::string& out_dir,
                               bool force, const ProgressFn& progress = nullptr,
                               const std::function<void(const std::string&)>& before_commit = nullptr);

/// The text of `parameters.json` for o and the digit source description.
std::string parameters_json(const MegapixelOptions& o, const std::string& digit_source_desc);

}  // namespace data
}  // namespace ipsnet
