#include "data/megapixel_mnist.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "data/resize.h"
#include "engine/common/error.h"
#include "engine/common/files.h"
#include "engine/common/json_writer.h"
#include "engine/common/ordered_parallel.h"

namespace ipsnet {
namespace data {

// ---- options ----------------------------------------------------------------

MegapixelOptions default_options(const std::string& style) {
  MegapixelOptions o;
  o.style = style;
  if (style == "ats" || style == "ips") return o;
  if (style == "mnist") {  // the IPS example notebook: MNIST resized to 500x500, a 10,000-image train subset
    o.width = o.height = 500;
    o.n_train = 10000;
    o.n_test = 1000;
    o.n_noise = 0;
    return o;
  }
  IPSNET_CHECK(style == "pineneedle",
               "--style must be ats, ips or pineneedle (Megapixel MNIST) or mnist (one resized digit), got '", style,
               "'");
  o.width = o.height = 3000;
  o.n_noise = 800;
  o.digit_size = 28;
  o.noise_size = 28;
  o.thickness = 1;
  return o;
}

void validate_options(const MegapixelOptions& o) {
  IPSNET_CHECK(o.style == "ats" || o.style == "ips" || o.style == "pineneedle" || o.style == "mnist",
               "--style must be ats, ips or pineneedle (Megapixel MNIST) or mnist (one resized digit), got '", o.style,
               "'");
  IPSNET_CHECK(o.n_train >= 0 && o.n_test >= 0, "--n-train ", o.n_train, " and --n-test ", o.n_test,
               " must be non-negative");
  IPSNET_CHECK(o.n_train + o.n_test > 0, "--n-train and --n-test are both 0: nothing to generate");
  IPSNET_CHECK(o.width >= 1 && o.height >= 1 && o.width <= kMaxCanvasSide && o.height <= kMaxCanvasSide,
               "canvas --width ", o.width, " x --height ", o.height, " must be within 1..", kMaxCanvasSide);
  int64_t d = o.digit_size;
  IPSNET_CHECK(d >= 1, "--digit-size must be >= 1, got ", d);
  IPSNET_CHECK(o.style == "pineneedle" || d == kDigitSide, "--digit-size ", d, " is only supported by --style",
               " pineneedle; ", o.style, " uses 28x28 MNIST digits");
  if (o.style != "mnist") {  // mnist: one digit resized to the whole canvas, any size
    IPSNET_CHECK(d <= o.height && d <= o.width, "--digit-size ", d, " is larger than the ", o.height, "x", o.width,
                 " canvas");
    // At most floor(H/d) * floor(W/d) axis-parallel d x d squares fit without overlap.
    IPSNET_CHECK((o.height / d) * (o.width / d) >= kDigitsPerImage, "the ", o.height, "x", o.width,
                 " canvas cannot hold ", kDigitsPerImage, " non-overlapping ", d, "x", d, " digits (at most ",
                 (o.height / d) * (o.width / d), " fit); enlarge the canvas or shrink --digit-size");
  }
  IPSNET_CHECK(o.n_noise >= 0, "--n-noise must be >= 0, got ", o.n_noise);
  if (o.style == "ats") {
    IPSNET_CHECK(o.scale > 0 && o.scale <= 1, "--scale must be in (0, 1], got ", o.scale);
    IPSNET_CHECK(static_cast<int64_t>(o.height * o.scale) >= 1 && static_cast<int64_t>(o.width * o.scale) >= 1,
                 "--scale ", o.scale, " makes the ", o.height, "x", o.width, " canvas's low-res view empty");
  }
  if (o.noise && o.n_noise > 0) {
    if (o.style == "pineneedle") {
      IPSNET_CHECK(o.noise_size >= 1 && o.noise_size < o.height && o.noise_size < o.width, "--noise-size ",
                   o.noise_size, " must be >= 1 and smaller than the ", o.height, "x", o.width, " canvas");
      IPSNET_CHECK(o.thickness >= 1 && o.thickness <= 28, "--thickness must be in 1..28 px, got ", o.thickness);
    } else {
      IPSNET_CHECK(o.height > 2 * kDigitSide && o.width > 2 * kDigitSide, "noise is placed in [28, H-28) x [28, W-28)",
                   ", so the canvas must exceed 56x56 (got ", o.height, "x", o.width, "); use --no-noise");
    }
  }
  IPSNET_CHECK(o.threads >= 0 && o.threads <= 1024, "--threads must be in 0..1024, got ", o.threads);
}

// ---- noise ------------------------------------------------------------------

NoiseBank make_line_noise_bank(Generator& g) {
  const int64_t s = kDigitSide, n = kAtsBankSize;
  std::vector<float> base(n * s * s, 0.0f);
  for (int64_t k = 0; k < n; ++k) {
    double slope = std::tan(g.uniform() * M_PI / 2.5);
    double xmax = std::min(27.49, slope > 0 ? 27.49 / slope : 27.49);
    for (int j = 0; j < 56; ++j) {
      double x = xmax * j / 55.0;
      double y = slope * x;
      // numpy's round is half-to-even, as is nearbyint in the default mode.
      int64_t r = static_cast<int64_t>(std::nearbyint(y)), c = static_cast<int64_t>(std::nearbyint(x));
      if (r >= 0 && r < s && c >= 0 && c < s) base[k * s * s + r * s + c] = 1.0f;
    }
  }
  // Union with a shuffled copy, flipped horizontally with p = 4/9 (the
  // original flips twice with p = 1/3 along the same axis: 2 * 1/3 * 2/3).
  std::vector<int64_t> perm = g.permutation(n);
  NoiseBank bank;
  bank.side = s;
  bank.patterns.assign(n * s * s, 0.0f);
  for (int64_t k = 0; k < n; ++k) {
    bool flip = g.bernoulli(4.0 / 9.0);
    const float* a = &base[k * s * s];
    const float* b = &base[perm[k] * s * s];
    float* dst = &bank.patterns[k * s * s];
    for (int64_t r = 0; r < s; ++r)
      for (int64_t c = 0; c < s; ++c) {
        float v = std::max(a[r * s + c], b[r * s + (flip ? s - 1 - c : c)]);
        float m = static_cast<float>(g.uniform(0.8, 1.0));
        dst[r * s + c] = v * m;
      }
  }
  return bank;
}

std::vector<std::pair<double, double>> bezier_points(const std::vector<std::pair<double, double>>& ctrl, int n_t) {
  std::vector<std::pair<double, double>> out;
  std::vector<std::pair<double, double>> tmp(ctrl.size());
  for (int j = 0; j < n_t; ++j) {
    double t = n_t > 1 ? static_cast<double>(j) / (n_t - 1) : 0.0;
    tmp = ctrl;
    for (size_t level = ctrl.size(); level > 1; --level)
      for (size_t i = 0; i + 1 < level; ++i) {
        tmp[i].first = (1 - t) * tmp[i].first + t * tmp[i + 1].first;
        tmp[i].second = (1 - t) * tmp[i].second + t * tmp[i + 1].second;
      }
    out.emplace_back(std::nearbyint(tmp[0].first), std::nearbyint(tmp[0].second));
  }
  return out;
}

void draw_polyline(const std::vector<std::pair<double, double>>& pts, int64_t thickness, float* dst, int64_t h,
                   int64_t w) {
  if (pts.empty()) return;
  const double half = thickness / 2.0;
  const double shift = thickness % 2 == 0 ? 0.5 : 0.0;
  auto segment = [&](double x0, double y0, double x1, double y1) {
    x0 += shift, y0 += shift, x1 += shift, y1 += shift;
    int64_t cmin = std::max<int64_t>(0, static_cast<int64_t>(std::floor(std::min(x0, x1) - half)));
    int64_t cmax = std::min<int64_t>(w - 1, static_cast<int64_t>(std::ceil(std::max(x0, x1) + half)));
    int64_t rmin = std::max<int64_t>(0, static_cast<int64_t>(std::floor(std::min(y0, y1) - half)));
    int64_t rmax = std::min<int64_t>(h - 1, static_cast<int64_t>(std::ceil(std::max(y0, y1) + half)));
    double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int64_t r = rmin; r <= rmax; ++r)
      for (int64_t c = cmin; c <= cmax; ++c) {
        double t = len2 > 0 ? std::clamp(((c - x0) * dx + (r - y0) * dy) / len2, 0.0, 1.0) : 0.0;
        double px = x0 + t * dx - c, py = y0 + t * dy - r;
        if (px * px + py * py < half * half) dst[r * w + c] = 1.0f;
      }
  };
  if (pts.size() == 1) segment(pts[0].first, pts[0].second, pts[0].first, pts[0].second);
  for (size_t i = 0; i + 1 < pts.size(); ++i)
    segment(pts[i].first, pts[i].second, pts[i + 1].first, pts[i + 1].second);
}

NoiseBank make_bezier_noise_bank(Generator& g, int64_t n, int64_t thickness, int64_t side) {
  const int64_t s = kDigitSide;
  NoiseBank bank;
  bank.side = side;
  bank.patterns.assign(n * side * side, 0.0f);
  std::vector<float> canvas(s * s);
  for (int64_t k = 0; k < n; ++k) {
    double u = g.uniform();
    int n_ctrl = u < 3.0 / 9.0 ? 4 : (u < 8.0 / 9.0 ? 6 : 8);
    std::vector<std::pair<double, double>> ctrl(n_ctrl);
    for (auto& p : ctrl) {
      p.first = static_cast<double>(g.randint(0, s));
      p.second = static_cast<double>(g.randint(0, s));
    }
    std::fill(canvas.begin(), canvas.end(), 0.0f);
    draw_polyline(bezier_points(ctrl, 100), thickness, canvas.data(), s, s);
    float* dst = bank.patterns.data() + k * side * side;
    if (side == s)
      std::copy(canvas.begin(), canvas.end(), dst);
    else
      resize_area(canvas.data(), s, s, dst, side, side);
  }
  return bank;
}

// ---- labels -----------------------------------------------------------------

void compute_labels(ImageMeta& meta) {
  meta.multi.fill(0);
  int counts[10] = {};
  int max_label = -1;
  const DigitInfo* top = nullptr;
  for (const auto& d : meta.digits) {
    ++counts[d.label];
    meta.multi[d.label] = 1;
    max_label = std::max(max_label, d.label);
    if (!top || d.row < top->row || (d.row == top->row && d.col < top->col)) top = &d;
  }
  meta.max = max_label;
  meta.top = top ? top->label : -1;
  meta.majority = -1;
  for (int c = 0; c < 10; ++c)
    if (counts[c] >= 3) meta.majority = c;
}

// ---- the split generator ----------------------------------------------------

namespace {
struct Block {
  int64_t r, c, side;
  const float* px;
};
}  // namespace

SplitGenerator::SplitGenerator(const MegapixelOptions& o, const DigitSet& digits, bool train)
    : o_(o), digits_(digits), n_(train ? o.n_train : o.n_test), split_seed_(train ? o.seed + 1 : o.seed) {
  for (int c = 0; c < 10; ++c)
    IPSNET_CHECK(!digits.by_class[c].empty(), "the ", train ? "train" : "test", " digits have no example of class ",
                 c, "; every class 0..9 is needed");
  Generator g(split_seed_, kBankStream);
  if (o.style == "mnist") {
    IPSNET_CHECK(n_ <= digits.size(), "--style mnist shows one digit per image, but --n-", train ? "train " : "test ",
                 n_, " exceeds the ", digits.size(), " ", train ? "train" : "test", " digits available");
    order_ = g.permutation(digits.size());
    order_.resize(n_);
  }
  if (o.noise && o.n_noise > 0) {
    if (o.style == "pineneedle")
      bank_ = make_bezier_noise_bank(g, o.n_noise, o.thickness, o.noise_size);
    else
      bank_ = make_line_noise_bank(g);
  }
  if (o.style == "ats") {
    lowres_h_ = static_cast<int64_t>(o.height * o.scale);
    lowres_w_ = static_cast<int64_t>(o.width * o.scale);
    for (int64_t k = 0; k < bank_.count(); ++k)
      bank_low_.push_back(rescale_antialias(bank_.pattern(k), bank_.side, o.scale, &bank_low_side_));
  }
}

SplitGenerator::~SplitGenerator() = default;

std::unique_ptr<SplitGenerator::Workspace> SplitGenerator::make_workspace() const {
  auto ws = std::make_unique<Workspace>();
  ws->canvas.assign(o_.height * o_.width, 0.0f);
  if (lowres_h_ > 0) ws->low_canvas.assign(lowres_h_ * lowres_w_, 0.0f);
  if (o_.style == "mnist")
    ws->digit_buf.assign(bank_.count() > 0 ? o_.height * o_.width : 0, 0.0f);  // the resized digit, under noise
  else
    ws->digit_buf.assign(kDigitsPerImage * o_.digit_size * o_.digit_size, 0.0f);
  return ws;
}

namespace {
// Paints blocks (full-block overwrite, clipped) in order on a zeroed canvas,
// extracts the nonzeros of the touched area only, and zeroes it again.
SparseImage composite(const std::vector<Block>& blocks, float* canvas, int64_t h, int64_t w,
                      std::vector<int32_t>& row_count,
                      std::vector<int32_t>& row_first, std::vector<std::pair<int32_t, int32_t>>& intervals) {
  row_count.assign(h + 1, 0);
  for (const Block& b : blocks) {
    int64_t r0 = std::max<int64_t>(b.r, 0), r1 = std::min<int64_t>(b.r + b.side, h);
    int64_t c0 = std::max<int64_t>(b.c, 0), c1 = std::min<int64_t>(b.c + b.side, w);
    if (r0 >= r1 || c0 >= c1) continue;
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(canvas + r * w + c0, b.px + (r - b.r) * b.side + (c0 - b.c), sizeof(float) * (c1 - c0));
      ++row_count[r];
    }
  }
  // CSR of column intervals per row.
  row_first.assign(h + 1, 0);
  for (int64_t r = 0; r < h; ++r) row_first[r + 1] = row_first[r] + row_count[r];
  intervals.resize(row_first[h]);
  std::vector<int32_t>& fill = row_count;  // reuse as a cursor
  for (int64_t r = 0; r < h; ++r) fill[r] = row_first[r];
  for (const Block& b : blocks) {
    int64_t r0 = std::max<int64_t>(b.r, 0), r1 = std::min<int64_t>(b.r + b.side, h);
    int64_t c0 = std::max<int64_t>(b.c, 0), c1 = std::min<int64_t>(b.c + b.side, w);
    if (r0 >= r1 || c0 >= c1) continue;
    for (int64_t r = r0; r < r1; ++r) intervals[fill[r]++] = {static_cast<int32_t>(c0), static_cast<int32_t>(c1)};
  }
  SparseImage s;
  s.height = h;
  s.width = w;
  s.row_counts.assign(h, 0);
  for (int64_t r = 0; r < h; ++r) {
    auto* a = intervals.data() + row_first[r];
    auto* e = intervals.data() + row_first[r + 1];
    if (a == e) continue;
    std::sort(a, e);
    float* row = canvas + r * w;
    int32_t cur_end = -1;
    uint16_t cnt = 0;
    for (auto* it = a; it != e; ++it) {
      int32_t start = std::max(it->first, cur_end);
      for (int32_t c = start; c < it->second; ++c) {
        if (row[c] != 0.0f) {
          s.cols.push_back(static_cast<uint16_t>(c));
          s.vals.push_back(row[c]);
          ++cnt;
          row[c] = 0.0f;
        }
      }
      cur_end = std::max(cur_end, it->second);
    }
    s.row_counts[r] = cnt;
  }
  return s;
}
}  // namespace

GeneratedImage SplitGenerator::generate(int64_t index, Workspace& ws) const {
  if (o_.style == "mnist") return generate_mnist(index, ws);
  Generator g(split_seed_, static_cast<uint64_t>(index));
  const int64_t d = o_.digit_size, H = o_.height, W = o_.width;
  GeneratedImage out;
  ImageMeta& meta = out.meta;

  // Digits: 3 of the target class, 2 from all other classes, with replacement.
  int target = static_cast<int>(g.randint(10));
  int64_t picks[kDigitsPerImage];
  const auto& pos = digits_.by_class[target];
  for (int k = 0; k < 3; ++k) picks[k] = pos[g.randint(pos.size())];
  int64_t n_other = digits_.size() - static_cast<int64_t>(pos.size());
  for (int k = 3; k < kDigitsPerImage; ++k) {
    int64_t j = static_cast<int64_t>(g.randint(static_cast<uint64_t>(n_other)));
    for (int c = 0; c < 10; ++c) {
      if (c == target) continue;
      int64_t cnt = static_cast<int64_t>(digits_.by_class[c].size());
      if (j < cnt) {
        picks[k] = digits_.by_class[c][j];
        break;
      }
      j -= cnt;
    }
  }

  // Positions: uniform top-left in [0, H-d] x [0, W-d], redrawn on overlap.
  // A crowded canvas restarts the whole placement a bounded number of times.
  const int kTries = 2000, kRestarts = 50;
  int64_t rows[kDigitsPerImage], cols[kDigitsPerImage];
  bool placed = false;
  for (int restart = 0; restart < kRestarts && !placed; ++restart) {
    placed = true;
    for (int k = 0; k < kDigitsPerImage && placed; ++k) {
      int tries = 0;
      for (;; ++tries) {
        if (tries == kTries) {
          placed = false;
          break;
        }
        rows[k] = g.randint(0, H - d + 1);
        cols[k] = g.randint(0, W - d + 1);
        bool overlap = false;
        for (int j = 0; j < k && !overlap; ++j)
          overlap = std::llabs(rows[k] - rows[j]) < d && std::llabs(cols[k] - cols[j]) < d;
        if (!overlap) break;
      }
    }
  }
  IPSNET_CHECK(placed, "could not place ", kDigitsPerImage, " non-overlapping ", d, "x", d, " digits on the ", H, "x",
               W, " canvas after ", kRestarts, " attempts; enlarge the canvas or shrink --digit-size");

  for (int k = 0; k < kDigitsPerImage; ++k) {
    const uint8_t* src = digits_.digit(picks[k]);
    float* dst = ws.digit_buf.data() + k * d * d;
    if (d == kDigitSide) {
      for (int64_t p = 0; p < kDigitPixels; ++p) dst[p] = src[p] / 255.0f;
    } else {
      float tmp[kDigitPixels];
      for (int64_t p = 0; p < kDigitPixels; ++p) tmp[p] = src[p] / 255.0f;
      resize_area(tmp, kDigitSide, kDigitSide, dst, d, d);
    }
    meta.digits.push_back({rows[k], cols[k], d, digits_.labels[picks[k]]});
  }

  // Noise placements.
  std::vector<Block> noise_blocks;
  int64_t n_noise = bank_.count() > 0 ? o_.n_noise : 0;
  noise_blocks.reserve(n_noise);
  std::vector<int64_t> noise_ids(n_noise);
  for (int64_t k = 0; k < n_noise; ++k) {
    int64_t r, c;
    if (o_.style == "pineneedle") {
      r = g.randint(0, H - bank_.side);
      c = g.randint(0, W - bank_.side);
    } else {
      r = g.randint(kDigitSide, H - kDigitSide);
      c = g.randint(kDigitSide, W - kDigitSide);
    }
    int64_t id = static_cast<int64_t>(g.randint(static_cast<uint64_t>(bank_.count())));
    noise_ids[k] = id;
    noise_blocks.push_back({r, c, bank_.side, bank_.pattern(id)});
  }
  meta.n_noise = n_noise;
  compute_labels(meta);

  std::vector<Block> digit_blocks;
  for (int k = 0; k < kDigitsPerImage; ++k)
    digit_blocks.push_back({rows[k], cols[k], d, ws.digit_buf.data() + k * d * d});

  std::vector<Block> order;
  order.reserve(n_noise + kDigitsPerImage);
  if (o_.style == "ats") {  // digits first, then noise over them
    order.insert(order.end(), digit_blocks.begin(), digit_blocks.end());
    order.insert(order.end(), noise_blocks.begin(), noise_blocks.end());
  } else {  // noise first; digits never occluded
    order.insert(order.end(), noise_blocks.begin(), noise_blocks.end());
    order.insert(order.end(), digit_blocks.begin(), digit_blocks.end());
  }
  out.high = composite(order, ws.canvas.data(), H, W, ws.row_count, ws.row_first, ws.intervals);

  if (o_.style == "ats") {
    // Low-res view: every block rescaled on its own, pasted at int(pos * scale).
    std::vector<std::vector<float>> low_digits(kDigitsPerImage);
    int64_t low_d = 0;
    for (int k = 0; k < kDigitsPerImage; ++k)
      low_digits[k] = rescale_antialias(ws.digit_buf.data() + k * d * d, d, o_.scale, &low_d);
    std::vector<Block> low;
    auto at = [&](int64_t p) { return static_cast<int64_t>(p * o_.scale); };
    for (int k = 0; k < kDigitsPerImage; ++k)
      if (low_d > 0) low.push_back({at(rows[k]), at(cols[k]), low_d, low_digits[k].data()});
    for (int64_t k = 0; k < n_noise; ++k)
      if (bank_low_side_ > 0)
        low.push_back({at(noise_blocks[k].r), at(noise_blocks[k].c), bank_low_side_, bank_low_[noise_ids[k]].data()});
    out.low = composite(low, ws.low_canvas.data(), lowres_h_, lowres_w_, ws.row_count, ws.row_first, ws.intervals);
  }
  return out;
}

GeneratedImage SplitGenerator::generate_mnist(int64_t index, Workspace& ws) const {
  const int64_t H = o_.height, W = o_.width;
  IPSNET_CHECK(index >= 0 && index < n_, "image index ", index, " out of range 0..", n_ - 1);
  const int64_t pick = order_[index];
  float digit[kDigitPixels];
  const uint8_t* px = digits_.digit(pick);
  for (int64_t p = 0; p < kDigitPixels; ++p) digit[p] = px[p] / 255.0f;

  GeneratedImage out;
  ImageMeta& meta = out.meta;
  const int label = digits_.labels[pick];
  meta.digits.push_back({0, 0, std::min(H, W), label});
  meta.majority = meta.max = meta.top = label;
  meta.multi.fill(0);
  meta.multi[label] = 1;

  float* canvas = ws.canvas.data();
  const int64_t n_noise = bank_.count() > 0 ? o_.n_noise : 0;
  meta.n_noise = n_noise;
  if (n_noise == 0) {
    resize_bilinear(digit, kDigitSide, kDigitSide, canvas, H, W);
  } else {
    // ips-style: line noise in [28, H-28) x [28, W-28) first, then the digit's
    // nonzero pixels over it (the digit is never occluded).
    Generator g(split_seed_, static_cast<uint64_t>(index));
    float* d = ws.digit_buf.data();
    resize_bilinear(digit, kDigitSide, kDigitSide, d, H, W);
    std::fill(canvas, canvas + H * W, 0.0f);
    const int64_t s = bank_.side;
    for (int64_t k = 0; k < n_noise; ++k) {
      int64_t r = g.randint(kDigitSide, H - kDigitSide);
      int64_t c = g.randint(kDigitSide, W - kDigitSide);
      const float* pat = bank_.pattern(static_cast<int64_t>(g.randint(static_cast<uint64_t>(bank_.count()))));
      for (int64_t i = 0; i < s && r + i < H; ++i)
        std::memcpy(canvas + (r + i) * W + c, pat + i * s, sizeof(float) * std::min(s, W - c));
    }
    for (int64_t p = 0; p < H * W; ++p)
      if (d[p] != 0.0f) canvas[p] = d[p];
  }
  out.high = SparseImage::from_dense(canvas, H, W);
  return out;
}

std::string parameters_json(const MegapixelOptions& o, const std::string& digit_source_desc) {
  JsonWriter j(2);
  j.begin_object()
      .member("format", "ipsnet-megapixel-mnist")
      .member("format_version", kDatasetVersion)
      .member("style", o.style)
      .member("n_train", o.n_train)
      .member("n_test", o.n_test)
      .member("width", o.width)
      .member("height", o.height)
      .member("scale", o.scale)
      .member("noise", o.noise)
      .member("seed", o.seed)
      .member("train_seed", o.seed + 1)
      .member("test_seed", o.seed)
      .member("n_noise", o.noise ? o.n_noise : 0)
      .member("noise_size", o.style == "pineneedle" ? o.noise_size : kDigitSide)
      .member("digit_size", o.style == "mnist" ? std::min(o.height, o.width) : o.digit_size)
      .member("line", o.thickness)
      .member("thickness", o.thickness)
      .member("digit_source", digit_source_desc)
      .end_object();
  return j.str() + "\n";
}

// ---- the parallel driver ----------------------------------------------------

namespace {

struct Item {
  std::vector<uint8_t> record;
  int64_t nnz = 0, nnz_low = 0;
  ImageMeta meta;
};

// Workers generate and encode images; the calling thread appends them in
// index order, holding at most 4 finished images per thread.
void generate_split(const SplitGenerator& gen, DatasetWriter& writer, int threads, const std::string& split,
                    const ProgressFn& progress) {
  const int64_t n = gen.size();
  auto make_work = [&gen] {
    return [&gen, ws = gen.make_workspace()](int64_t i) {
      GeneratedImage img = gen.generate(i, *ws);
      Item item;
      item.record = encode_record(img.high, gen.has_lowres() ? &img.low : nullptr);
      item.nnz = img.high.nnz();
      item.nnz_low = img.low.nnz();
      item.meta = std::move(img.meta);
      return item;
    };
  };
  ordered_parallel_map(n, threads, 4 * static_cast<int64_t>(threads), make_work, [&](int64_t i, Item&& item) {
    writer.append(item.record, item.nnz, item.nnz_low, item.meta);
    if (progress) progress(split, i + 1, n);
  });
}

}  // namespace

GenerateStats generate_dataset(const MegapixelOptions& o, const DigitSource& src, const std::string& out_dir,
                               bool force, const ProgressFn& progress,
                               const std::function<void(const std::string&)>& before_commit) {
  validate_options(o);
  auto t0 = std::chrono::steady_clock::now();
  int threads = o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  TempDirectory dir(out_dir, force);  // removes itself unless committed
  const std::string& tmp = dir.path();
  GenerateStats stats;
  std::string desc = src.name + " (" + src.kind + ": " + src.path + ")";
  if (src.kind == "npm") desc += "; npm split: first floor(4n/5) digits of each class train, the rest test";
  write_file_atomic(tmp + "/parameters.json", parameters_json(o, desc));
  for (bool train : {true, false}) {
    SplitGenerator gen(o, train ? src.train : src.test, train);
    SplitHeader h;
    h.height = o.height;
    h.width = o.width;
    h.lowres_height = gen.lowres_height();
    h.lowres_width = gen.lowres_width();
    h.style = o.style;
    std::string split = train ? "train" : "test";
    DatasetWriter writer(tmp, split, h);
    generate_split(gen, writer, threads, split, progress);
    writer.finish();
    stats.images += writer.count();
    stats.bytes += writer.bytes();
  }
  if (before_commit) before_commit(tmp);
  dir.commit();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace data
}  // namespace ipsnet
